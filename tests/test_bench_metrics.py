"""Metrics from scored runs: the refinement curve, histogram, tokens, cost, latency, time share."""

import numpy as np
import pytest

from benchmarks import Metrics, Prices, Score, ScoredRun, compute_metrics
from benchmarks.metrics import percentile
from benchmarks.runner import BenchResult
from executors.base import ExecutionResult, Outcome
from orchestrator.types import Attempt, RunResult, RunStatus, Usage


def scored(
    item_id, outcomes, correct, *, wall=1.0, model=0.4, execution=0.5, usage=None, error=None, solved_at="retries"
):
    """A scored run; ``solved_at`` defaults to the run's retries when correct (every attempt a new program)."""
    attempts = [
        Attempt(code=f"print({i})", result=ExecutionResult(outcome=Outcome.OK if ok else Outcome.FAILED))
        for i, ok in enumerate(outcomes)
    ]
    run = RunResult(
        prompt=item_id,
        summary="",
        status=RunStatus.SOLVED if outcomes and outcomes[-1] else RunStatus.FAILED,
        attempts=attempts,
        usage=usage or Usage(input_tokens=100, output_tokens=10, tool_tokens=5, thoughts_tokens=2, requests=2),
        wall_time_s=wall,
        model_time_s=model,
        execution_time_s=execution,
        error=error,
    )
    if solved_at == "retries":
        solved_at = run.retries if correct else None
    return ScoredRun(
        item_id=item_id, run=run, score=Score(item_id=item_id, correct=correct, scoring_time_s=0.1, solved_at=solved_at)
    )


RECORDS = [
    scored("a", [True], True, wall=1.0),
    scored("b", [False, True], True, wall=2.0),
    scored("c", [False, False, False, True], True, wall=3.0),
    scored("d", [True], False, wall=4.0),  # ran, but wrong
    scored("e", [False] * 6, False, wall=10.0),
    scored("f", [], False, wall=0.5, error="ModelError: boom"),
]


def test_refinement_curve_and_histogram():
    m = compute_metrics(RECORDS)
    assert (m.items, m.solved, m.solved_first_attempt) == (6, 3, 1)
    assert m.curve == [1, 2, 2, 3, 3, 3]
    assert m.curve_rates == pytest.approx([1 / 6, 2 / 6, 2 / 6, 3 / 6, 3 / 6, 3 / 6])
    assert m.retries_solved == {0: 1, 1: 1, 3: 1}
    assert m.retries_unsolved == {0: 2, 5: 1}
    assert m.model_errors == 1
    assert m.loop_solved == 4  # a, b, c, d ended on a successful execution; d was still wrong
    assert (m.ran_code, m.ran_code_ok) == (5, 4)  # f ran nothing; e's executions all failed
    assert m.ran_code_rate == pytest.approx(5 / 6)
    assert compute_metrics(RECORDS, max_k=8).curve == [1, 2, 2, 3, 3, 3, 3, 3, 3]


def test_the_curve_counts_solved_at_not_the_final_score():
    records = [
        scored("rerun", [False, True], True, solved_at=None),  # passed only by re-running the failed program
        scored("regressed", [True, False], False, solved_at=0),  # a code item whose first program passed
        scored("late", [False, False, True], True, solved_at=2),
    ]
    m = compute_metrics(records)
    assert m.solved == 2
    assert m.curve == [1, 1, 2, 2, 2, 2]  # below the solve rate at the end: "rerun" is no fix
    assert m.solved_first_attempt == 1


def test_tokens_cost_latency_and_time_share():
    m = compute_metrics(RECORDS)
    assert (m.input_tokens, m.output_tokens, m.intermediate_tokens, m.thinking_tokens, m.requests) == (
        600,
        60,
        30,
        12,
        12,
    )
    assert m.cost_usd is None and m.cost_source == "none"
    walls = [1.0, 2.0, 3.0, 4.0, 10.0, 0.5]
    assert m.latency_p50_s == pytest.approx(np.percentile(walls, 50))
    assert m.latency_p95_s == pytest.approx(np.percentile(walls, 95))
    assert m.model_time_share == pytest.approx(0.4 / 0.9)
    assert m.execution_time_share == pytest.approx(0.5 / 0.9)
    assert m.scoring_time_s == pytest.approx(0.6)

    estimated = compute_metrics(RECORDS, prices=Prices(input_per_mtok=1.0, output_per_mtok=4.0))
    # Intermediate tokens bill as input, thinking as output.
    assert estimated.cost_usd == pytest.approx((630 * 1.0 + 72 * 4.0) / 1e6)
    assert estimated.cost_source == "estimated"

    reported = compute_metrics(
        [
            scored("r", [True], True, usage=Usage(input_tokens=1, cost_usd=0.25)),
            scored("s", [True], True, usage=Usage(input_tokens=1, cost_usd=0.5)),
        ]
    )
    assert reported.cost_usd == pytest.approx(0.75) and reported.cost_source == "reported"


def test_percentile_matches_numpy():
    for values in ([3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0, 9.5, 0.1]):
        for q in (0, 50, 95, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 50) == 0.0


def test_empty_benchmark_has_zero_rates():
    m = compute_metrics([])
    assert m.items == 0 and m.curve == [0] * 6 and m.solve_rate == 0.0 and m.model_time_share == 0.0


def test_json_round_trips():
    m = compute_metrics(RECORDS)
    assert Metrics.from_json(m.to_json()) == m
    record = RECORDS[1]
    assert ScoredRun.from_json(record.to_json()).to_json() == record.to_json()
    result = BenchResult(
        bench_dir="d", config={"benchmark": "x"}, metrics=m, report_path="d/report.md", records=RECORDS[:2]
    )
    assert BenchResult.from_json(result.to_json()).to_json() == result.to_json()
