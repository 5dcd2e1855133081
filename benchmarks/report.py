"""The benchmark report: ``report.md``, ``metrics.json`` and PNG plots in BENCH_DIR,
and a side-by-side comparison of two bench directories."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import Metrics, ScoredRun

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOTS = {
    "curve": "refinement_curve.png",
    "retries": "retries_histogram.png",
    "latency": "latency.png",
}


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _cost(metrics: Metrics) -> str:
    if metrics.cost_usd is None:
        return "not reported (pass prices for an estimate)"
    return f"${metrics.cost_usd:.4f} ({metrics.cost_source})"


def summary_rows(metrics: Metrics) -> list[tuple[str, str]]:
    """The headline numbers as (label, value) rows: the report and compare share them."""
    m = metrics
    per_item = (lambda total: f"{total / m.items:.1f}") if m.items else (lambda total: "n/a")
    rows = [
        ("items", str(m.items)),
        ("solved (scored correct)", f"{m.solved} ({pct(m.solved, m.items)})"),
        ("passed at first attempt (k=0)", f"{m.solved_first_attempt} ({pct(m.solved_first_attempt, m.items)})"),
    ]
    rows += [
        (
            "runs that ran code (any / a successful execution)",
            f"{m.ran_code} ({pct(m.ran_code, m.items)}) / {m.ran_code_ok} ({pct(m.ran_code_ok, m.items)})",
        ),
        ("runs whose last execution succeeded", f"{m.loop_solved} ({pct(m.loop_solved, m.items)})"),
        ("runs ended by a model error", str(m.model_errors)),
        ("model requests", str(m.requests)),
        ("input tokens (total / per item)", f"{m.input_tokens} / {per_item(m.input_tokens)}"),
        ("output tokens (total / per item)", f"{m.output_tokens} / {per_item(m.output_tokens)}"),
        ("intermediate tokens (total / per item)", f"{m.intermediate_tokens} / {per_item(m.intermediate_tokens)}"),
        ("thinking tokens (total / per item)", f"{m.thinking_tokens} / {per_item(m.thinking_tokens)}"),
        ("cost", _cost(m)),
        ("latency p50 per item", f"{m.latency_p50_s:.3f} s"),
        ("latency p95 per item", f"{m.latency_p95_s:.3f} s"),
        ("time in model calls", f"{m.model_time_s:.2f} s ({pct(m.model_time_s, m.model_time_s + m.execution_time_s)})"),
        (
            "time in executions",
            f"{m.execution_time_s:.2f} s ({pct(m.execution_time_s, m.model_time_s + m.execution_time_s)})",
        ),
        ("time scoring", f"{m.scoring_time_s:.2f} s"),
    ]
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(metrics: Metrics, config: dict[str, Any], records: Sequence[ScoredRun]) -> str:
    m = metrics
    retries = sorted(set(m.retries_solved) | set(m.retries_unsolved))
    unsolved = [r for r in records if not r.score.correct]
    parts = [
        f"# Benchmark: {config.get('benchmark', '?')}",
        "",
        f"Model `{config.get('model', '?')}`, executor `{config.get('executor', '?')}`, "
        f"scored with executor `{config.get('scoring_executor', '?')}`, max retries {config.get('max_retries', '?')}.",
        "",
        "## Summary",
        "",
        _table(["metric", "value"], summary_rows(m)),
        "",
        "Scores are in the `bench_scores` table of `runs.db`; the `items` table's `run_status` is the loop's "
        "own status (`solved` = the last execution succeeded), which says nothing about correctness.",
        "",
        "## Refinement curve",
        "",
        "An item passes within k refinements when an attempt passes with at most k failed executions before "
        "it; after a failure only a different program counts as a fix (re-running the same code fixes nothing). "
        "Code items test each attempt's program; answer items credit the last successful execution when the "
        "answer is right.",
        "",
        _table(["k", "passed", "rate"], [(str(k), str(c), pct(c, m.items)) for k, c in enumerate(m.curve)]),
        "",
        f"![refinement curve]({PLOTS['curve']})",
        "",
        "## Retries histogram",
        "",
        "Failed executions before the final one, per item.",
        "",
        _table(
            ["retries", "solved", "unsolved"],
            [(str(k), str(m.retries_solved.get(k, 0)), str(m.retries_unsolved.get(k, 0))) for k in retries],
        ),
        "",
        f"![retries histogram]({PLOTS['retries']})",
        "",
        "## Latency",
        "",
        f"Wall time per item: p50 {m.latency_p50_s:.3f} s, p95 {m.latency_p95_s:.3f} s, mean {m.latency_mean_s:.3f} s. "
        f"Model calls took {pct(m.model_time_s, m.model_time_s + m.execution_time_s)} of the loop's time, "
        f"executions {pct(m.execution_time_s, m.model_time_s + m.execution_time_s)}.",
        "",
        f"![latency]({PLOTS['latency']})",
        "",
        f"## Unsolved items ({len(unsolved)})",
        "",
    ]
    parts += _unsolved_table(unsolved)
    parts += ["", "## Items", "", *item_table(records)]
    return "\n".join(parts) + "\n"


def _cell(text: str, width: int = 120) -> str:
    return text[:width].replace("|", "\\|").replace("\n", " ")


def _unsolved_table(unsolved: Sequence[ScoredRun]) -> list[str]:
    parts = []
    if unsolved:
        shown = unsolved[:50]
        parts.append(
            _table(
                ["item", "retries", "expected", "got", "why"],
                [
                    (
                        r.item_id,
                        str(r.retries),
                        r.score.expected or "",
                        r.score.got or "",
                        _cell(r.score.detail or r.run.error or ""),
                    )
                    for r in shown
                ],
            )
        )
        if len(unsolved) > len(shown):
            parts.append(f"\n... and {len(unsolved) - len(shown)} more (see runs.db).")
    else:
        parts.append("None.")
    return parts


ITEM_ROWS = 200


def item_table(records: Sequence[ScoredRun]) -> list[str]:
    """One row per item: correct at k=0 and in the end, status, tokens, time."""
    rows = []
    for r in records[:ITEM_ROWS]:
        at = r.score.solved_at
        rows.append(
            (
                r.item_id,
                "yes" if at == 0 else "no",
                "yes" if r.score.correct else "no",
                "-" if at is None else str(at),
                str(r.retries),
                r.run.status.value,
                str(len(r.run.attempts)),
                str(r.run.usage.total_tokens),
                f"{r.run.wall_time_s:.1f}",
                _cell(r.score.got or "", 60),
                _cell(r.score.detail or r.run.error or "", 100),
            )
        )
    lines = [
        _table(
            [
                "item",
                "correct at k=0",
                "correct",
                "passed at k",
                "retries",
                "status",
                "executions",
                "tokens",
                "time (s)",
                "got",
                "why not",
            ],
            rows,
        )
    ]
    if len(records) > ITEM_ROWS:
        lines.append(f"\n... and {len(records) - ITEM_ROWS} more (see runs.db).")
    return lines


def render_plots(metrics: Metrics, out_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    from matplotlib.figure import Figure  # no pyplot: no global figure state to close

    m = metrics
    written = []

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ks = list(range(len(m.curve)))
    ax.plot(ks, [100 * r for r in m.curve_rates], marker="o")
    ax.set_xticks(ks)
    ax.set_ylim(0, 100)
    ax.set_xlabel("refinements allowed (k)")
    ax.set_ylabel("items passing (%)")
    ax.set_title(f"Refinement curve: {title}")
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / PLOTS["curve"]))

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    retries = sorted(set(m.retries_solved) | set(m.retries_unsolved)) or [0]
    solved = [m.retries_solved.get(k, 0) for k in retries]
    unsolved = [m.retries_unsolved.get(k, 0) for k in retries]
    ax.bar(retries, solved, label="solved")
    ax.bar(retries, unsolved, bottom=solved, label="unsolved")
    ax.set_xticks(retries)
    ax.set_xlabel("failed executions before the final one")
    ax.set_ylabel("items")
    ax.set_title(f"Retries: {title}")
    ax.legend()
    written.append(_save(fig, out_dir / PLOTS["retries"]))

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.hist(m.latencies_s or [0.0], bins=min(30, max(1, len(m.latencies_s))))
    for value, label in ((m.latency_p50_s, "p50"), (m.latency_p95_s, "p95")):
        ax.axvline(value, linestyle="--", color="black")
        ax.text(value, ax.get_ylim()[1] * 0.95, f" {label}", va="top")
    ax.set_xlabel("wall time per item (s)")
    ax.set_ylabel("items")
    ax.set_title(f"Latency: {title}")
    written.append(_save(fig, out_dir / PLOTS["latency"]))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_report(bench_dir: str | Path, metrics: Metrics, config: dict[str, Any], records: Sequence[ScoredRun]) -> Path:
    """Write report.md, metrics.json and the plots; returns report.md's path."""
    out = Path(bench_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps({"config": config, "metrics": metrics.to_json()}, indent=2) + "\n")
    render_plots(metrics, out, f"{config.get('benchmark', '')}, {config.get('model', '')}")
    report = out / REPORT_FILE
    report.write_text(render_markdown(metrics, config, records))
    return report


def render_comparison(a: tuple[str, Metrics, dict[str, Any]], b: tuple[str, Metrics, dict[str, Any]]) -> str:
    """Two runs side by side, with B minus A for the headline rates."""
    (name_a, ma, ca), (name_b, mb, cb) = a, b
    rows: list[tuple[str, ...]] = [
        ("benchmark", str(ca.get("benchmark")), str(cb.get("benchmark"))),
        ("model", str(ca.get("model")), str(cb.get("model"))),
        ("executor", str(ca.get("executor")), str(cb.get("executor"))),
        ("max retries", str(ca.get("max_retries")), str(cb.get("max_retries"))),
    ]
    for (label, va), (_, vb) in zip(summary_rows(ma), summary_rows(mb), strict=True):
        rows.append((label, va, vb))
    for k in range(max(len(ma.curve), len(mb.curve))):
        cells = [f"{m.curve[k]} ({pct(m.curve[k], m.items)})" if k < len(m.curve) else "n/a" for m in (ma, mb)]
        rows.append((f"passing within k={k}", *cells))
    delta: list[tuple[str, ...]] = [
        ("solve rate, B - A", f"{100 * (mb.solve_rate - ma.solve_rate):+.1f} points", ""),
        (
            "first-attempt rate, B - A",
            f"{100 * (mb.curve_rates[0] - ma.curve_rates[0]):+.1f} points" if ma.curve and mb.curve else "n/a",
            "",
        ),
    ]
    return _table(["", f"A: {name_a}", f"B: {name_b}"], rows + delta) + "\n"
