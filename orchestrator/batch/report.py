"""Export a run directory's results and summarise them: a table and PNG plots.

Everything here reads the store; nothing writes to it.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..types import RunResult
from .store import DONE, ERROR, BatchStore

EXPORT_FORMATS = ("jsonl", "csv")
CSV_COLUMNS = (
    "id",
    "status",
    "run_status",
    "prompt",
    "summary",
    "error",
    "executions",
    "retries",
    "rate_limited",
    "interruptions",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "requests",
    "cost_usd",
    "wall_time_s",
    "model_time_s",
    "execution_time_s",
    "code",
    "metadata",
)
RETRIES_PLOT = "report-retries.png"
LATENCY_PLOT = "report-latency.png"
REPORT_JSON = "report.json"


def export(store: BatchStore, out: TextIO, fmt: str) -> int:
    """Write one record per item (input order); returns how many were written.

    JSONL records carry the full stored ``result`` (RunResult JSON with
    artifact bytes), so ``RunResult.from_json(record["result"])`` round-trips.
    CSV is one flat row per item, with the last code that ran.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    count = 0
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore") if fmt == "csv" else None
    if writer:
        writer.writeheader()
    for record in store.records():
        finished = record.status in (DONE, ERROR)
        if writer:
            # The row needs only the summary and the code: skip reading the artifact files.
            data = store.result_json(record.id) if finished else None
            result = RunResult.from_json(data) if data else None
            row = record.to_json()
            row.update(
                summary=result.summary if result else "",
                code=result.code if result else "",
                metadata=json.dumps(record.metadata, sort_keys=True),
            )
            writer.writerow(row)
        else:
            result = store.result(record.id) if finished else None
            line = {
                "id": record.id,
                "status": record.status,
                "prompt": record.prompt,
                "files": record.files,
                "metadata": record.metadata,
                "result": result.to_json() if result else None,
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        count += 1
    return count


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    import numpy

    return float(numpy.percentile(values, q))


@dataclass
class BatchReport:
    total: int = 0
    finished: int = 0  # done + error
    solved: int = 0
    failed: int = 0  # reached an answer but the code never worked
    answered_without_code: int = 0
    unverified: int = 0  # needed code, but the model answered without running any
    errors: int = 0  # could not complete (model errors); re-run on resume
    pending: int = 0  # not yet run, or interrupted
    retries_histogram: dict[int, int] = field(default_factory=dict)  # retries -> items
    rate_limited_calls: int = 0
    interruptions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    cost_usd: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["retries_histogram"] = {str(k): v for k, v in sorted(self.retries_histogram.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchReport:
        data = dict(data)
        data["retries_histogram"] = {int(k): v for k, v in data.get("retries_histogram", {}).items()}
        return cls(**data)


def summarise(store: BatchStore) -> tuple[BatchReport, list[float]]:
    """The report and the finished items' latencies (wall time per item)."""
    report = BatchReport(settings=store.settings() or {})
    latencies: list[float] = []
    histogram: Counter[int] = Counter()
    costs: list[float] = []
    for record in store.records():
        report.total += 1
        report.interruptions += record.interruptions
        if record.status not in (DONE, ERROR):
            report.pending += 1
            continue
        report.finished += 1
        report.rate_limited_calls += record.rate_limited
        if record.status == ERROR:
            report.errors += 1
        elif record.run_status == "solved":
            report.solved += 1
        elif record.run_status == "answered_without_code":
            report.answered_without_code += 1
        elif record.run_status == "unverified":
            report.unverified += 1
        else:
            report.failed += 1
        histogram[record.retries or 0] += 1
        report.input_tokens += record.input_tokens or 0
        report.output_tokens += record.output_tokens or 0
        report.total_tokens += record.total_tokens or 0
        report.requests += record.requests or 0
        if record.cost_usd is not None:
            costs.append(record.cost_usd)
        if record.wall_time_s is not None:
            latencies.append(record.wall_time_s)
    report.retries_histogram = dict(sorted(histogram.items()))
    report.cost_usd = sum(costs) if costs else None
    report.latency_p50_s = percentile(latencies, 50)
    report.latency_p95_s = percentile(latencies, 95)
    report.latency_max_s = max(latencies) if latencies else None
    return report, latencies


def write_plots(report: BatchReport, latencies: list[float], directory: Path) -> list[Path]:
    """The retries histogram and the latency distribution, as PNGs in ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    paths: list[Path] = []
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    keys = sorted(report.retries_histogram) or [0]
    axes.bar([str(k) for k in keys], [report.retries_histogram.get(k, 0) for k in keys], color="#4c72b0")
    axes.set_xlabel("retries (failed executions before the last)")
    axes.set_ylabel("items")
    axes.set_title(f"Retries per item ({report.finished} finished)")
    paths.append(directory / RETRIES_PLOT)
    figure.tight_layout()
    figure.savefig(paths[-1], dpi=100)

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.hist(latencies or [0.0], bins=min(40, max(5, len(latencies) // 5)), color="#55a868")
    for value, label in ((report.latency_p50_s, "p50"), (report.latency_p95_s, "p95")):
        if value is not None:
            axes.axvline(value, color="black", linestyle="--", linewidth=1)
            axes.annotate(f"{label} {value:.2f}s", (value, 0), xytext=(3, 5), textcoords="offset points", rotation=90)
    axes.set_xlabel("wall time per item (s)")
    axes.set_ylabel("items")
    axes.set_title("Latency distribution")
    paths.append(directory / LATENCY_PLOT)
    figure.tight_layout()
    figure.savefig(paths[-1], dpi=100)
    return paths


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report_rows(report: BatchReport) -> list[tuple[str, str]]:
    """The summary table, as (label, value) rows."""

    def share(n: int) -> str:
        return f"{n} ({100.0 * n / report.finished:.1f}%)" if report.finished else str(n)

    histogram = ", ".join(f"{k}: {v}" for k, v in sorted(report.retries_histogram.items())) or "-"
    return [
        ("items", str(report.total)),
        ("finished", str(report.finished)),
        ("solved", share(report.solved)),
        ("failed", share(report.failed)),
        ("answered without code", share(report.answered_without_code)),
        ("unverified (needed code, ran none)", share(report.unverified)),
        ("errors (re-run on --resume)", share(report.errors)),
        ("not run yet", str(report.pending)),
        ("retries histogram (retries: items)", histogram),
        ("rate-limited calls", str(report.rate_limited_calls)),
        ("interruptions", str(report.interruptions)),
        ("model requests", str(report.requests)),
        ("tokens in / out / total", f"{report.input_tokens} / {report.output_tokens} / {report.total_tokens}"),
        ("cost", "-" if report.cost_usd is None else f"${report.cost_usd:.4f}"),
        ("latency p50", _fmt_seconds(report.latency_p50_s)),
        ("latency p95", _fmt_seconds(report.latency_p95_s)),
        ("latency max", _fmt_seconds(report.latency_max_s)),
    ]
