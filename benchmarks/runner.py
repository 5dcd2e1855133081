"""Running a benchmark: items go through the batch runner (its store, its
resume), each result is scored as it lands, and the report is computed from
the store at the end.

Scoring (see docs/benchmarks.md):

- HumanEval: the model is asked for the complete function plus tests it
  prints. The scored program is the problem's prompt, then the definitions
  of the model's last executed program (imports, functions, classes,
  call-free assignments: its own tests are dropped), then the hidden test
  and ``check(entry_point)``, run in the scoring executor. Solved when that
  program runs without error.
- Custom ``test`` items: the model's definitions, then the item's test code.
  For the refinement curve each attempt's program is tested the same way
  (:mod:`benchmarks.refinement`).
- GSM8K and numeric ``answer`` items: the number the summary's prose states,
  else the last successful execution printed
  (:func:`benchmarks.scoring.extract_answer`), against the reference; never
  a number inside code. Without a successful execution such an item is wrong.
- ``expect`` items: every check holds (:mod:`benchmarks.prompt_set`).
- A run that ended with a model error is unsolved; it runs again on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from executors.base import Executor, Limits
from executors.registry import available_executors, get_executor
from orchestrator.batch import BatchItem, BatchProgress, BatchStore, StoreError, run_batch, stored_config
from orchestrator.batch.engine import spec_names
from orchestrator.config import LoopConfig
from orchestrator.extract import extract_code, join_blocks
from orchestrator.models.base import Model
from orchestrator.types import RunResult

from .datasets import BenchItem, load_dataset
from .metrics import MAX_K, Metrics, Prices, ScoredRun, compute_metrics
from .prompt_set import check_expectations, parse_checks
from .refinement import answer_solved_at, first_passing_attempt, last_successful, last_successful_stdout, program_key
from .report import REPORT_FILE, write_report
from .scoring import (
    Score,
    humaneval_program,
    score_by_running,
    score_exact,
    score_numeric,
    test_program,
)
from .store import BenchStoreError, ScoreStore, load_scored_runs

REFERENCE_PREFIX = "reference:"
# What must match for --resume to continue a bench directory.
RESUME_KEYS = ("benchmark", "data")


def default_scoring_executor() -> str:
    """The sandbox when it is installed, else the local subprocess executor."""
    return "sandbox" if "sandbox" in available_executors() else "local"


@dataclass
class BenchResult:
    bench_dir: str
    config: dict[str, Any]
    metrics: Metrics
    report_path: str
    records: list[ScoredRun] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench_dir": self.bench_dir,
            "config": self.config,
            "metrics": self.metrics.to_json(),
            "report_path": self.report_path,
            "records": [r.to_json() for r in self.records],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        return cls(
            bench_dir=data["bench_dir"],
            config=data["config"],
            metrics=Metrics.from_json(data["metrics"]),
            report_path=data["report_path"],
            records=[ScoredRun.from_json(r) for r in data["records"]],
        )


def scored_code(run: RunResult) -> str:
    """The program to score: the last one that ran, else code in the summary."""
    if run.attempts:
        return run.code
    return join_blocks(extract_code(run.summary))


async def score_item(item: BenchItem, run: RunResult, executor: Executor, limits: Limits | None = None) -> Score:
    if run.error:
        return Score(item_id=item.id, correct=False, expected=item.answer, detail=f"run failed: {run.error}")
    if item.scoring in ("humaneval", "test"):
        return await score_code_item(item, run, executor, limits)
    if item.scoring == "expect":
        score = check_expectations(item.id, parse_checks(item.expect), run, requires_code=item.requires_code)
    else:
        assert item.answer is not None, f"item {item.id} has neither test nor answer"
        scorer = score_numeric if item.scoring == "numeric" else score_exact
        score = scorer(
            item.id,
            item.answer,
            run.summary,
            last_successful_stdout(run),
            ran_ok=last_successful(run.attempts) is not None,
            requires_code=item.requires_code,
        )
    score.solved_at = answer_solved_at(run, score.correct)
    return score


async def score_code_item(item: BenchItem, run: RunResult, executor: Executor, limits: Limits | None) -> Score:
    """Run the hidden tests against the final program (``correct``) and, for the
    refinement curve, against each distinct earlier program (``solved_at``)."""
    code = scored_code(run)
    if not code.strip():
        return Score(item_id=item.id, correct=False, detail="the model wrote no code")
    verdicts: dict[str, Score] = {}

    async def tested(program_code: str) -> Score:
        key = program_key(program_code)
        if key not in verdicts:
            if item.scoring == "humaneval":
                program = humaneval_program(item.source_prompt, program_code, item.test or "", item.entry_point or "")
            else:
                program = test_program(program_code, item.test or "")
            verdicts[key], _ = await score_by_running(item.id, program, executor, limits)
        return verdicts[key]

    async def passes(program_code: str) -> bool:
        return (await tested(program_code)).correct

    final = replace(await tested(code))
    if run.attempts:
        final.solved_at = await first_passing_attempt(run.attempts, passes)
    else:  # code the summary holds, never run: the model's first answer
        final.solved_at = 0 if final.correct else None
    final.scoring_time_s = sum(s.scoring_time_s for s in verdicts.values())
    return final


def resolve_model(model: Model | str, items: Sequence[BenchItem]) -> Model | str:
    """``reference:NAME`` builds a reference test double for these items;
    other strings go to the model registry (via the batch runner)."""
    if isinstance(model, str) and model.startswith(REFERENCE_PREFIX):
        from .reference_models import REFERENCE_MODELS

        name = model[len(REFERENCE_PREFIX) :]
        if name not in REFERENCE_MODELS:
            raise ValueError(f"unknown reference model {name!r}; choose one of: {', '.join(REFERENCE_MODELS)}")
        return REFERENCE_MODELS[name](items)
    return model


def _check_resume(
    stored: dict[str, Any] | None, config: dict[str, Any], bench_dir: Path, resume: bool, force: bool
) -> None:
    if stored is None:
        return
    if not resume:
        raise BenchStoreError(
            f"{bench_dir} already holds a benchmark ({stored.get('benchmark')}); pass --resume "
            "(resume=True) to continue it, or choose another directory"
        )
    differ = [
        f"{k}: stored {stored.get(k)!r}, now {config.get(k)!r}" for k in RESUME_KEYS if stored.get(k) != config.get(k)
    ]
    if differ and not force:
        raise BenchStoreError(f"{bench_dir} holds a different benchmark:\n  " + "\n  ".join(differ))


async def run_benchmark(
    benchmark: str | Sequence[BenchItem],
    *,
    model: Model | str,
    bench_dir: str | Path,
    config: LoopConfig | None = None,
    executor: Any = None,
    data: str | Path | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    resume: bool = False,
    force: bool = False,
    scoring_executor: str | Executor | None = None,
    scoring_limits: Limits | None = None,
    prices: Prices | None = None,
    progress: BatchProgress | None = None,
    on_scored: Callable[[ScoredRun], None] | None = None,
    **loop_settings: Any,
) -> BenchResult:
    """Run ``benchmark`` (``humaneval``, ``gsm8k``, a JSONL path, or a list of
    :class:`BenchItem`) with ``model`` and write BENCH_DIR's store and report.

    ``model`` is a Model, a model spec string, or ``reference:NAME`` (a
    reference test double, see :mod:`benchmarks.reference_models`). How each
    item runs is ``config`` (a :class:`LoopConfig`; on ``resume`` without one,
    the stored one) with ``loop_settings`` (its fields by keyword) over it;
    ``executor`` (a name, an Executor or a factory) overrides its executor.
    ``scoring_executor`` runs the hidden tests (default: the sandbox when
    installed, else local). With ``resume`` the items already finished keep
    their results and scores; the rest run.
    """
    items, name = _load_items(benchmark, data, limit)
    bench_path = Path(bench_dir)
    resolved = resolve_model(model, items)
    loop = (config or (stored_config(bench_path) if resume else None) or LoopConfig()).with_settings(loop_settings)
    if isinstance(executor, str):
        loop = loop.replace(executor=executor)
    executor_spec = loop.executor if executor is None or isinstance(executor, str) else executor
    given_scorer, scoring_name = _scoring_choice(scoring_executor)
    names = (*spec_names(resolved, executor_spec), scoring_name)
    bench_config = _bench_config(name, items, loop, data=data, limit=limit, prices=prices, names=names)
    batch = dict(
        model=resolved,
        run_dir=bench_path,
        config=loop,
        executor=executor_spec,
        concurrency=concurrency,
        resume=resume,
        force=force,
        progress=progress,
    )
    store = _bench_store(bench_path, bench_config, given_scorer, scoring_name, resume=resume, force=force)
    async with store as (scores, scorer):
        await _run_and_score(items, name, scores, scorer, scoring_limits, on_scored, batch=batch)
    return build_report(bench_path)


def _scoring_choice(scoring_executor: str | Executor | None) -> tuple[Executor | None, str]:
    """The scoring executor the caller gave (None when given a name or nothing) and its name:
    the given name, else the default scoring executor."""
    if scoring_executor is not None and not isinstance(scoring_executor, str):
        return scoring_executor, scoring_executor.name
    return None, scoring_executor or default_scoring_executor()


@contextlib.asynccontextmanager
async def _bench_store(
    bench_path: Path,
    bench_config: dict[str, Any],
    given_scorer: Executor | None,
    scoring_name: str,
    *,
    resume: bool,
    force: bool,
) -> AsyncIterator[tuple[ScoreStore, Executor]]:
    """BENCH_DIR's score store, checked against and set to ``bench_config``, with the scoring executor
    (``given_scorer``, else one started by name and closed on leaving)."""
    with ScoreStore(bench_path) as scores:
        stored = scores.config()
        _check_resume(stored, bench_config, bench_path, resume, force)
        scores.set_config(bench_config)
        scorer = given_scorer or get_executor(scoring_name)
        try:
            yield scores, scorer
        except StoreError:
            # The batch refused the run (other settings without --force, or another process on it):
            # nothing ran with the new config, so the stored one still describes the runs.
            scores.restore_config(stored)
            raise
        finally:
            if given_scorer is None:  # ours: we started it
                await scorer.aclose()


def _load_items(
    benchmark: str | Sequence[BenchItem], data: str | Path | None, limit: int | None
) -> tuple[list[BenchItem], str]:
    if isinstance(benchmark, str):
        return load_dataset(benchmark, data=data, limit=limit), benchmark
    return (list(benchmark)[:limit] if limit else list(benchmark)), "items"


def _bench_config(
    name: str,
    items: list[BenchItem],
    loop: LoopConfig,
    *,
    data: str | Path | None,
    limit: int | None,
    prices: Prices | None,
    names: tuple[str, str, str],
) -> dict[str, Any]:
    """What a resumed benchmark must match: the data, the model, the executors and the loop."""
    model_name, executor_name, scoring_name = names
    return {
        "benchmark": name,
        "data": str(Path(data).resolve()) if data else None,
        "limit": limit,
        "items": len(items),
        "model": model_name,
        "executor": executor_name,
        "scoring_executor": scoring_name,
        "max_retries": loop.max_retries,
        "max_steps": loop.max_steps,
        "tools": loop.tools,
        "require_code": loop.require_code,
        "max_k": max(MAX_K, loop.max_retries),
        "prices": [prices.input_per_mtok, prices.output_per_mtok] if prices else None,
        "loop_config": loop.to_json(),
    }


async def _run_and_score(
    items: list[BenchItem],
    name: str,
    scores: ScoreStore,
    scorer: Executor,
    scoring_limits: Limits | None,
    on_scored: Callable[[ScoredRun], None] | None,
    *,
    batch: dict[str, Any],
) -> None:
    """Run the items as a batch and score each result as it arrives, at most
    ``concurrency`` scorings at a time."""
    by_id = {item.id: item for item in items}
    batch_items = [
        BatchItem(
            id=i.id,
            prompt=i.prompt,
            files=list(i.files),
            metadata={"benchmark": name, "scoring": i.scoring},
            source=f"{name}:{i.id}",
        )
        for i in items
    ]
    slots = asyncio.Semaphore(batch["concurrency"])

    async def score_and_save(item_id: str, result: RunResult) -> None:
        async with slots:
            score = await score_item(by_id[item_id], result, scorer, scoring_limits)
        scores.save(score, result.retries)
        if on_scored is not None:
            on_scored(ScoredRun(item_id=item_id, run=result, score=score))

    tasks: list[asyncio.Task[None]] = []
    try:
        async for item_id, result in run_batch(batch_items, **batch):
            tasks.append(asyncio.create_task(score_and_save(item_id, result)))
        await asyncio.gather(*tasks)
        # Items a previous session finished but did not score (it stopped in between).
        await _score_leftovers(Path(batch["run_dir"]), scores, by_id, score_and_save)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _score_leftovers(
    bench_path: Path, scores: ScoreStore, by_id: dict[str, BenchItem], score_and_save: Callable[[str, RunResult], Any]
) -> None:
    scored = set(scores.scores())
    store = BatchStore(bench_path, create=False)
    try:
        pending = [
            (r.id, store.result(r.id))
            for r in store.records()
            if r.status in ("done", "error") and r.id not in scored and r.id in by_id
        ]
    finally:
        store.close()
    await asyncio.gather(*(score_and_save(item_id, result) for item_id, result in pending if result is not None))


def build_report(bench_dir: str | Path) -> BenchResult:
    """Recompute the metrics from BENCH_DIR's store and (re)write the report."""
    result = load_bench(bench_dir)
    result.report_path = str(write_report(result.bench_dir, result.metrics, result.config, result.records))
    return result


def load_bench(bench_dir: str | Path) -> BenchResult:
    """The metrics of BENCH_DIR, recomputed from its store; writes nothing."""
    bench_path = Path(bench_dir)
    with ScoreStore(bench_path, create=False) as scores:
        config = scores.config()
    if config is None:
        raise BenchStoreError(f"{bench_path} holds no benchmark")
    prices = Prices(*config["prices"]) if config.get("prices") else None
    records = load_scored_runs(bench_path)
    metrics = compute_metrics(records, max_k=config.get("max_k", MAX_K), prices=prices)
    return BenchResult(
        bench_dir=str(bench_path),
        config=config,
        metrics=metrics,
        report_path=str(bench_path / REPORT_FILE),
        records=records,
    )


def run(benchmark: str | Sequence[BenchItem], **options: Any) -> BenchResult:
    """Synchronous :func:`run_benchmark` (not from inside a running event loop)."""
    return asyncio.run(run_benchmark(benchmark, **options))
