"""Tables, goals and the Markdown report of ``benchmarks.perf.executors``.

Measurements come in as plain dataclasses; nothing here runs an executor.
Latency is shown next to its ratio to the ``jupyter`` executor's p50 in the
same run, since only ratios survive the load of a shared machine.
"""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass, field

REFERENCE = "jupyter"  # the warm kernel every case is compared to
PLOT_CASE = "matplotlib plot -> PNG"
HUMANEVAL_GOAL_S = 0.5
PLOT_GOAL_MS = 60.0
MIB = 1024 * 1024


@dataclass
class CaseResult:
    executor: str
    case: str
    samples_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None

    @property
    def best(self) -> float | None:
        """The fastest run: what the executor costs when nothing else competes for the CPU."""
        return min(self.samples_ms) if self.samples_ms else None

    @property
    def p95(self) -> float | None:
        if not self.samples_ms:
            return None
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass
class HumanEvalResult:
    executor: str
    problems: int
    passed: int
    wall_s: float
    failed_ids: list[str]


@dataclass
class ProcessMemory:
    """One zygote (or the spare forked from it), as psutil reads it."""

    executor: str
    role: str  # "zygote" or "spare"
    pid: int
    rss: int
    pss: int | None
    uss: int | None


@dataclass
class ExecutorRun:
    name: str  # the label in the tables ("pool+set" is the pool preloading Gemini's set)
    isolation: str = ""
    start_s: float = 0.0
    cases: list[CaseResult] = field(default_factory=list)
    humaneval: HumanEvalResult | None = None
    memory: list[ProcessMemory] = field(default_factory=list)
    memory_error: str | None = None
    error: str | None = None

    def p50(self, case: str) -> float | None:
        """The case's median, or None when it was not measured or gave a wrong result."""
        found = next((c for c in self.cases if c.case == case), None)
        return None if found is None or found.failures else found.p50


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def ratio(runs: list[ExecutorRun], name: str, case: str) -> float | None:
    """``name``'s p50 over the reference kernel's, for one case."""
    by_name = {r.name: r for r in runs}
    mine, ref = by_name.get(name), by_name.get(REFERENCE)
    if mine is None or ref is None:
        return None
    a, b = mine.p50(case), ref.p50(case)
    return a / b if a is not None and b else None


def latency_table(runs: list[ExecutorRun], case_names: list[str]) -> tuple[list[str], list[list[str]]]:
    ok_runs = [r for r in runs if r.cases]
    with_reference = any(r.name == REFERENCE for r in ok_runs)
    header = ["case"]
    for r in ok_runs:
        header.append(f"{r.name} p50 / p95 / min ms")
        if with_reference and r.name != REFERENCE:
            header.append(f"{r.name} / {REFERENCE}")
    rows = []
    for case in case_names:
        row = [case]
        for r in ok_runs:
            c = next((c for c in r.cases if c.case == case), None)
            if c is None:
                row.append("-")
            else:
                mark = "" if not c.failures else f" ({len(c.failures)} wrong)"
                row.append(f"{fmt_ms(c.p50)} / {fmt_ms(c.p95)} / {fmt_ms(c.best)}{mark}")
            if with_reference and r.name != REFERENCE:
                value = ratio(runs, r.name, case)
                row.append("-" if value is None else f"{value:.2f}")
        rows.append(row)
    return header, rows


def humaneval_table(runs: list[ExecutorRun]) -> tuple[list[str], list[list[str]]]:
    header = ["executor", "isolation", "start-up s", "HumanEval passed", "wall s", "ms / problem"]
    rows = []
    for r in runs:
        if r.error and not r.cases:
            rows.append([r.name, "-", "-", f"unavailable: {r.error}", "-", "-"])
            continue
        h = r.humaneval
        rows.append(
            [
                r.name,
                r.isolation,
                f"{r.start_s:.2f}",
                f"{h.passed}/{h.problems}" if h else "-",
                f"{h.wall_s:.2f}" if h else "-",
                f"{h.wall_s * 1000 / h.problems:.1f}" if h and h.problems else "-",
            ]
        )
    return header, rows


def memory_table(runs: list[ExecutorRun]) -> tuple[list[str], list[list[str]]]:
    def mib(value: int | None) -> str:
        return "-" if value is None else f"{value / MIB:.1f}"

    header = ["executor", "process", "pid", "RSS MiB", "PSS MiB", "USS MiB"]
    rows = []
    for r in runs:
        if r.memory_error:
            rows.append([r.name, f"not measured: {r.memory_error}", "-", "-", "-", "-"])
        for m in r.memory:
            rows.append([r.name, m.role, str(m.pid), mib(m.rss), mib(m.pss), mib(m.uss)])
    return header, rows


def issue15_goals(
    runs: list[ExecutorRun], case_names: list[str], full_humaneval: bool
) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for the warm pool's goals; met is None when not measured."""
    by_name = {r.name: r for r in runs}
    goals: list[tuple[str, str, bool | None]] = []
    for pool in ("pool", "pool+set"):
        if pool not in by_name:
            continue
        ratios = {case: ratio(runs, pool, case) for case in case_names}
        known = {c: v for c, v in ratios.items() if v is not None}
        if known:
            worst = max(known, key=lambda case: known[case])
            goals.append(
                (
                    f"{pool} p50 <= {REFERENCE} p50 on every case",
                    f"worst {known[worst]:.2f}x ({worst})",
                    all(v <= 1.0 for v in known.values()) and len(known) == len(case_names),
                )
            )
        else:
            goals.append((f"{pool} p50 <= {REFERENCE} p50 on every case", "not measured", None))
        plot = by_name[pool].p50(PLOT_CASE)
        goals.append(
            (
                f"{pool} plot p50 <= {PLOT_GOAL_MS:g} ms",
                "not measured" if plot is None else f"{plot:.1f} ms",
                None if plot is None else plot <= PLOT_GOAL_MS,
            )
        )
        h = by_name[pool].humaneval
        if h is None:
            goals.append((f"{pool} HumanEval 164 in <= {HUMANEVAL_GOAL_S:g} s", "not measured", None))
        else:
            met = h.passed == h.problems == 164 and h.wall_s <= HUMANEVAL_GOAL_S
            goals.append(
                (
                    f"{pool} HumanEval 164 in <= {HUMANEVAL_GOAL_S:g} s",
                    f"{h.passed}/{h.problems} in {h.wall_s:.2f} s",
                    met if full_humaneval else None,
                )
            )
        measured = bool(by_name[pool].memory)
        goals.append(
            (f"{pool} zygote memory reported", "see the memory table" if measured else "not measured", measured)
        )
    return goals


def issue4_targets(runs: list[ExecutorRun], full_humaneval: bool) -> list[tuple[str, str, bool | None]]:
    """The earlier targets (pool against cold processes)."""
    by_name = {r.name: r for r in runs}

    def p50(executor: str, case: str) -> float | None:
        r = by_name.get(executor)
        return None if r is None else r.p50(case)

    results: list[tuple[str, str, bool | None]] = []

    def add(target: str, value: float | None, ok, unit: str = "ms") -> None:
        if value is None:
            results.append((target, "not measured", None))
        else:
            results.append((target, f"{value:.1f} {unit}" if unit else f"{value:.1f}x", bool(ok(value))))

    add("pool p50 print(1) <= 10 ms", p50("pool", "print(1)"), lambda v: v <= 10)
    add("pool p50 numpy matmul <= 15 ms", p50("pool", "numpy 200x200 matmul"), lambda v: v <= 15)
    pool_pd, sandbox_pd = p50("pool", "pandas groupby 10k rows"), p50("sandbox", "pandas groupby 10k rows")
    add(
        "pool >= 50x faster than cold sandbox on pandas",
        (sandbox_pd / pool_pd) if pool_pd and sandbox_pd else None,
        lambda v: v >= 50,
        unit="",
    )
    add("sandbox p50 print(1) <= 40 ms", p50("sandbox", "print(1)"), lambda v: v <= 40)
    for r in runs:
        if r.humaneval:
            met = r.humaneval.passed == 164 and full_humaneval
            results.append((f"HumanEval 164/164 on {r.name}", f"{r.humaneval.passed}/{r.humaneval.problems}", met))
    for cold in ("local", "sandbox"):
        pool_h, cold_h = by_name.get("pool"), by_name.get(cold)
        if pool_h and cold_h and pool_h.humaneval and cold_h.humaneval:
            share = pool_h.humaneval.wall_s / cold_h.humaneval.wall_s
            results.append(
                (f"pool HumanEval time < 1/4 of a cold {cold} process each", f"{share:.3f} of {cold}", share < 0.25)
            )
    return results


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def goals_rows(goals: list[tuple[str, str, bool | None]], markdown: bool) -> list[list[str]]:
    words = {True: "yes", False: "**no**" if markdown else "NO", None: "not measured" if markdown else "-"}
    return [[goal, measured, words[met]] for goal, measured, met in goals]


def machine_line(load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> str:
    return (
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} before the run, "
        f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} after it. The machine is shared with other "
        "work, which inflates every number; executors are measured in turn (case by case, HumanEval in chunks) so "
        "that load hits them alike and the ratios stay fair"
    )


def build_report(runs: list[ExecutorRun], case_names: list[str], settings: dict) -> str:
    """The Markdown report. ``settings``: command, started, elapsed_s, load_before,
    load_after, repeats, problems, concurrency, full_set, full_humaneval."""
    lines = [
        *_intro_lines(settings),
        "## Latency",
        "",
        render_markdown(*latency_table(runs, case_names)),
        "",
        *_humaneval_lines(runs, settings),
        *_failure_lines(runs),
        *_memory_lines(runs),
        *_goal_lines(runs, case_names, settings["full_humaneval"]),
    ]
    return "\n".join(lines)


def _intro_lines(s: dict) -> list[str]:
    """Title, how and where the report was made, and how to read the latency figures."""
    return [
        "# Executor benchmark",
        "",
        f"Generated by `{s['command']}` on {s['started'].strftime('%Y-%m-%d %H:%M UTC')} in {s['elapsed_s']:.0f} s.",
        "",
        f"Machine: {machine_line(s['load_before'], s['load_after'])}.",
        "",
        (
            f"Latency is the wall time seen by the caller of `execute()`, {s['repeats']} runs per case after one "
            f"warm-up execution ({s['cold_repeats']} for {' and '.join(s['cold'])}, which start a cold interpreter "
            "each time); output and figures are checked on every run. `min` is the fastest run, the "
            f"closest to the executor's own cost on a machine where other work competes for the two cores. "
            f"`X / {REFERENCE}` is X's p50 over the {REFERENCE} executor's (one warm kernel) in this run: "
            "under 1 is faster. `pool+set` is the pool whose zygotes preload Gemini's whole library set "
            f"({', '.join(s['full_set'])})."
        ),
        "",
    ]


def _humaneval_lines(runs: list[ExecutorRun], s: dict) -> list[str]:
    return [
        "## HumanEval canonical solutions",
        "",
        (
            f"{s['problems']} problems (prompt + canonical solution + tests + `check(entry_point)`), "
            f"{s['concurrency']} at a time; wall time is the sum over the chunks each executor ran. "
            "Start-up is the time to the first result (pools start their zygotes)."
        ),
        "",
        render_markdown(*humaneval_table(runs)),
        "",
    ]


def _failure_lines(runs: list[ExecutorRun]) -> list[str]:
    """The HumanEval problems each executor failed (first 20), then each case with a wrong result."""
    lines: list[str] = []
    for r in runs:
        if r.humaneval and r.humaneval.failed_ids:
            ids = r.humaneval.failed_ids
            lines += [f"Failed on {r.name}: " + "; ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""), ""]
    for r in runs:
        for c in r.cases:
            if c.failures:
                lines += [f"Wrong results: {r.name} / {c.case}: {c.failures[0]}", ""]
    return lines


def _memory_lines(runs: list[ExecutorRun]) -> list[str]:
    return [
        "## Zygote memory",
        "",
        (
            "Each pool's zygotes (the preloaded interpreters) and the spare each one has forked, read with psutil "
            "after the latency runs. PSS shares each page among the processes mapping it; USS is what the process "
            "alone holds (for a spare: the cost of one fork)."
        ),
        "",
        render_markdown(*memory_table(runs)),
        "",
    ]


def _goal_lines(runs: list[ExecutorRun], case_names: list[str], full_humaneval: bool) -> list[str]:
    return [
        "## Goals (issue 15: the warm pool at a warm kernel's speed)",
        "",
        render_markdown(["goal", "measured", "met"], goals_rows(issue15_goals(runs, case_names, full_humaneval), True)),
        "",
        "## Targets (issue 4)",
        "",
        render_markdown(["target", "measured", "met"], goals_rows(issue4_targets(runs, full_humaneval), True)),
        "",
    ]
