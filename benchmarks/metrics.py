"""Benchmark metrics, computed from scored runs.

Definitions (also in docs/benchmarks.md):

- retries of an item = failed executions before its final execution
  (``RunResult.retries``): 0 when the first program ran cleanly.
- solved = the final answer (or final program) is scored correct.
- passing within k refinements: some attempt passes with at most k failed
  executions before it, and when k > 0 its program differs from every
  program that failed before it (``Score.solved_at``, see
  :mod:`benchmarks.refinement`). k=0 is "passed at the first attempt"; the
  curve for k = 0..max_k is non-decreasing. It can end below the solve rate
  (a pass that only re-ran a failed program is no fix) and, for code items,
  above it (an earlier program passed the hidden tests, the final one not).
- ran code: runs with at least one execution; ran code ok: with at least one
  successful execution (program-of-thought items need one to be correct).
- retries histogram: items per number of retries, split solved / unsolved.
- tokens: input, output, intermediate (tool-use prompt tokens) and thinking,
  summed and per item; cost is the sum of providers' reported costs, or an
  estimate from per-million-token prices when given.
- latency: wall time per item (p50, p95 by linear interpolation); time share:
  total model time and total execution time as fractions of their sum.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.batch.report import percentile as batch_percentile
from orchestrator.types import RunResult, RunStatus

from .scoring import Score

MAX_K = 5


@dataclass
class ScoredRun:
    """One item's run and its score."""

    item_id: str
    run: RunResult
    score: Score

    @property
    def retries(self) -> int:
        return self.run.retries

    def to_json(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "run": self.run.to_json(), "score": self.score.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoredRun:
        return cls(item_id=data["item_id"], run=RunResult.from_json(data["run"]), score=Score.from_json(data["score"]))


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; intermediate and thinking tokens bill as input and output."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass
class Metrics:
    items: int
    solved: int
    solved_first_attempt: int
    curve: list[int]  # curve[k] = items passing within k refinements (Score.solved_at <= k), k = 0..max_k
    retries_solved: dict[int, int]  # retries -> solved items
    retries_unsolved: dict[int, int]
    model_errors: int
    ran_code: int  # runs with at least one execution
    ran_code_ok: int  # runs with at least one successful execution
    loop_solved: int  # runs whose last execution succeeded (the store's run_status 'solved'), right or wrong
    input_tokens: int
    output_tokens: int
    intermediate_tokens: int
    thinking_tokens: int
    requests: int
    cost_usd: float | None
    cost_source: str  # "reported", "estimated" or "none"
    latency_p50_s: float
    latency_p95_s: float
    latency_mean_s: float
    model_time_s: float
    execution_time_s: float
    scoring_time_s: float
    latencies_s: list[float] = field(default_factory=list)

    @property
    def solve_rate(self) -> float:
        return self.solved / self.items if self.items else 0.0

    @property
    def ran_code_rate(self) -> float:
        return self.ran_code / self.items if self.items else 0.0

    @property
    def curve_rates(self) -> list[float]:
        return [c / self.items if self.items else 0.0 for c in self.curve]

    @property
    def model_time_share(self) -> float:
        total = self.model_time_s + self.execution_time_s
        return self.model_time_s / total if total else 0.0

    @property
    def execution_time_share(self) -> float:
        total = self.model_time_s + self.execution_time_s
        return self.execution_time_s / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["retries_solved"] = {str(k): v for k, v in self.retries_solved.items()}
        data["retries_unsolved"] = {str(k): v for k, v in self.retries_unsolved.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metrics:
        data = dict(data)
        data["retries_solved"] = {int(k): v for k, v in data["retries_solved"].items()}
        data["retries_unsolved"] = {int(k): v for k, v in data["retries_unsolved"].items()}
        return cls(**data)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default); 0 for no values."""
    value = batch_percentile(list(values), q)
    return 0.0 if value is None else value


def compute_metrics(records: Sequence[ScoredRun], *, max_k: int = MAX_K, prices: Prices | None = None) -> Metrics:
    solved = [r for r in records if r.score.correct]
    passed_at = [r.score.solved_at for r in records if r.score.solved_at is not None]
    curve = [sum(1 for at in passed_at if at <= k) for k in range(max_k + 1)]
    usage = [r.run.usage for r in records]
    input_tokens = sum(u.input_tokens for u in usage)
    output_tokens = sum(u.output_tokens for u in usage)
    intermediate = sum(u.tool_tokens for u in usage)
    thinking = sum(u.thoughts_tokens for u in usage)
    reported = [u.cost_usd for u in usage if u.cost_usd is not None]
    if prices is not None:
        cost, source = prices.cost(input_tokens + intermediate, output_tokens + thinking), "estimated"
    elif reported:
        cost, source = sum(reported), "reported"
    else:
        cost, source = None, "none"
    latencies = [r.run.wall_time_s for r in records]
    return Metrics(
        items=len(records),
        solved=len(solved),
        solved_first_attempt=curve[0] if curve else 0,
        curve=curve,
        retries_solved=dict(sorted(Counter(r.retries for r in solved).items())),
        retries_unsolved=dict(sorted(Counter(r.retries for r in records if not r.score.correct).items())),
        model_errors=sum(1 for r in records if r.run.error),
        ran_code=sum(1 for r in records if r.run.attempts),
        ran_code_ok=sum(1 for r in records if any(a.ok for a in r.run.attempts)),
        loop_solved=sum(1 for r in records if r.run.status is RunStatus.SOLVED),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        intermediate_tokens=intermediate,
        thinking_tokens=thinking,
        requests=sum(u.requests for u in usage),
        cost_usd=cost,
        cost_source=source,
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_mean_s=sum(latencies) / len(latencies) if latencies else 0.0,
        model_time_s=sum(r.run.model_time_s for r in records),
        execution_time_s=sum(r.run.execution_time_s for r in records),
        scoring_time_s=sum(r.score.scoring_time_s for r in records),
        latencies_s=latencies,
    )
