"""Report numbers computed from the store: outcomes, retries, tokens, cost, latency percentiles."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from executors.base import Artifact, ExecutionResult, Outcome
from orchestrator.batch import BatchItem, BatchSettings, BatchStore
from orchestrator.batch.report import BatchReport, export, percentile, summarise, write_plots
from orchestrator.config import LoopConfig
from orchestrator.types import Attempt, RunResult, RunStatus, Usage


def attempt(ok: bool) -> Attempt:
    return Attempt(code="x", result=ExecutionResult(outcome=Outcome.OK if ok else Outcome.FAILED))


def test_percentile_interpolates_and_handles_no_values() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([0.0, 10.0], 95) == 9.5
    assert percentile([], 50) is None


def test_summary_counts_outcomes_retries_tokens_cost_and_latency(tmp_path: Path) -> None:
    runs = {
        "a": RunResult(
            prompt="a",
            summary="",
            status=RunStatus.SOLVED,
            attempts=[attempt(False), attempt(False), attempt(True)],
            usage=Usage(input_tokens=10, output_tokens=2, requests=3, cost_usd=0.5),
            wall_time_s=1.0,
        ),
        "b": RunResult(
            prompt="b",
            summary="",
            status=RunStatus.FAILED,
            attempts=[attempt(False)],
            usage=Usage(input_tokens=5, output_tokens=1, requests=2),
            wall_time_s=3.0,
        ),
        "c": RunResult(
            prompt="c", summary="42", status=RunStatus.ANSWERED_WITHOUT_CODE, usage=Usage(requests=1), wall_time_s=2.0
        ),
        "d": RunResult(prompt="d", summary="", status=RunStatus.FAILED, error="ModelError: 500", wall_time_s=0.5),
    }
    with BatchStore(tmp_path) as store:
        store.initialise(
            BatchSettings(model="m", config=LoopConfig(executor="e")).to_json(),
            [BatchItem(id=i, prompt=i) for i in [*runs, "e"]],
        )
        session = store.begin_session({})
        for item_id, result in runs.items():
            store.mark_running(item_id, session)
            store.finish(item_id, result, rate_limited=1 if item_id == "a" else 0)
        report, latencies = summarise(store)
        out = io.StringIO()
        assert export(store, out, "jsonl") == 5
    assert (
        report.total,
        report.finished,
        report.solved,
        report.failed,
        report.answered_without_code,
        report.errors,
        report.pending,
    ) == (5, 4, 1, 1, 1, 1, 1)
    assert report.retries_histogram == {0: 3, 2: 1}
    assert (report.input_tokens, report.output_tokens, report.requests, report.cost_usd) == (15, 3, 6, 0.5)
    assert report.rate_limited_calls == 1
    assert sorted(latencies) == [0.5, 1.0, 2.0, 3.0]
    assert report.latency_p50_s == 1.5 and report.latency_max_s == 3.0
    assert BatchReport.from_json(json.loads(json.dumps(report.to_json()))) == report
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["status"] for line in lines] == ["done", "done", "done", "error", "pending"]
    assert lines[-1]["result"] is None
    paths = write_plots(report, latencies, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_a_batch_with_nothing_finished_still_reports_and_plots(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        store.initialise(
            BatchSettings(model="m", config=LoopConfig(executor="e")).to_json(), [BatchItem(id="a", prompt="a")]
        )
        report, latencies = summarise(store)
    assert (report.total, report.pending, report.finished, report.latency_p50_s) == (1, 1, 0, None)
    assert all(p.exists() for p in write_plots(report, latencies, tmp_path))


def test_csv_export_reads_no_artifact_files(tmp_path: Path) -> None:
    png = Artifact(name="plot.png", data=b"\x89PNG-bytes", mime_type="image/png")
    result = RunResult(
        prompt="p",
        summary="done",
        status=RunStatus.SOLVED,
        attempts=[Attempt(code="print(1)", result=ExecutionResult(outcome=Outcome.OK, artifacts=[png]))],
    )
    with BatchStore(tmp_path) as store:
        store.initialise(
            BatchSettings(model="m", config=LoopConfig(executor="e")).to_json(), [BatchItem(id="a", prompt="p")]
        )
        store.mark_running("a", store.begin_session({}))
        store.finish("a", result)
        (tmp_path / "artifacts" / "a" / "plot.png").unlink()  # the CSV row must not need it
        out = io.StringIO()
        assert export(store, out, "csv") == 1
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["id"], row["summary"], row["code"]) == ("a", "done", "print(1)")
