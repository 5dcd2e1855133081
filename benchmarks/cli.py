"""codeloop bench: run a benchmark into BENCH_DIR, or compare two bench directories.

(Registered as a ``codeloop.commands`` entry point, so the orchestrator's CLI
does not import the benchmarks package that imports it.)

    codeloop bench humaneval --model ... -o runs/he            (HumanEval, 164 problems)
    codeloop bench gsm8k --data test.jsonl --model ... -o runs/gsm
    codeloop bench items.jsonl --model ... -o runs/custom      (prompt + answer or test)
    codeloop bench compare runs/he-no-retries runs/he

--model reference:NAME runs a reference test double (canonical,
broken-then-fixed, wrong, gsm8k-annotations, gsm8k-wrong) to check the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from executors import UnknownExecutorError, available_executors
from orchestrator.cli import EXIT_FAILED, EXIT_OK, UsageError
from orchestrator.cli._common import add_run_options, close_model, loop_config, resolve_model

if TYPE_CHECKING:
    from .runner import BenchResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run a benchmark (humaneval, gsm8k, FILE.jsonl) or compare two runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="humaneval, gsm8k, a JSONL file, or 'compare'")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="compare: the two bench directories")
    p.add_argument("-o", "--output", metavar="BENCH_DIR", help="where the store, report and plots go")
    p.add_argument("--data", metavar="PATH", help="the data file (required for gsm8k; optional for humaneval)")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--concurrency", type=int, default=4, help="items in flight at once (default 4)")
    p.add_argument("--resume", action="store_true", help="continue BENCH_DIR: finished items are kept")
    p.add_argument("--force", action="store_true", help="with --resume: accept changed settings")
    p.add_argument("--scoring-executor", help="executor for hidden tests (default: sandbox when installed, else local)")
    p.add_argument("--price-input", type=float, metavar="USD", help="price per million input tokens (cost estimate)")
    p.add_argument("--price-output", type=float, metavar="USD", help="price per million output tokens")
    add_run_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.target == "compare":
        return compare(args)
    if args.dirs:
        raise UsageError(f"unexpected arguments {args.dirs}: only 'compare' takes directories")
    return run(args)


def compare(args: argparse.Namespace) -> int:
    from . import BenchStoreError, load_bench
    from .report import render_comparison

    if len(args.dirs) != 2:
        raise UsageError("compare needs exactly two bench directories: codeloop bench compare DIR_A DIR_B")
    sides = []
    for directory in args.dirs:
        try:
            result = load_bench(directory)
        except BenchStoreError as exc:
            raise UsageError(str(exc)) from exc
        sides.append((directory, result.metrics, result.config))
    print(render_comparison(sides[0], sides[1]), end="")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from orchestrator.batch import BatchProgress, StoreError

    from . import BenchStoreError, DatasetError, Prices, ScoringError, run_benchmark
    from .runner import REFERENCE_PREFIX

    _check_run_options(args)
    config = loop_config(args)
    for name in filter(None, (config.executor, args.scoring_executor)):
        if name not in available_executors():
            raise UsageError(f"unknown executor {name!r}; choose one of: {', '.join(available_executors())}")
    if args.model and args.model.startswith(REFERENCE_PREFIX):
        if args.record:
            raise UsageError("--record records a real model's turns; reference models are scripted already")
        model = args.model  # built from the loaded items by the runner
    else:
        model = resolve_model(args)
    prices = Prices(args.price_input, args.price_output) if args.price_input is not None else None
    progress = BatchProgress()

    async def bench():
        try:
            return await run_benchmark(
                args.target,
                model=model,
                bench_dir=args.output,
                config=config,
                data=args.data,
                limit=args.limit,
                concurrency=args.concurrency,
                resume=args.resume,
                force=args.force,
                scoring_executor=args.scoring_executor,
                prices=prices,
                progress=progress,
            )
        finally:
            if not isinstance(model, str):
                await close_model(model)

    try:
        result = asyncio.run(bench())
    except (DatasetError, BenchStoreError, StoreError, UnknownExecutorError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    except ScoringError as exc:
        print(f"codeloop: {exc}\nThe finished runs are stored; `--resume` scores them.", file=sys.stderr)
        return EXIT_FAILED
    _print_summary(result)
    return EXIT_OK if result.metrics.items else EXIT_FAILED


def _check_run_options(args: argparse.Namespace) -> None:
    """Refuse option values ``run`` cannot use, before anything is built."""
    if not args.output:
        raise UsageError("-o BENCH_DIR is required: the store, report and plots go there")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if (args.price_input is None) != (args.price_output is None):
        raise UsageError("give both --price-input and --price-output, or neither")


def _print_summary(result: BenchResult) -> None:
    """The metrics table and refinement curve on stdout; where the report is, on stderr."""
    from .report import summary_rows

    width = max(len(label) for label, _ in summary_rows(result.metrics))
    for label, value in summary_rows(result.metrics):
        print(f"{label:<{width}}  {value}")
    curve = "  ".join(f"k={k}: {100 * r:.1f}%" for k, r in enumerate(result.metrics.curve_rates))
    print(f"{'refinement curve':<{width}}  {curve}")
    print(f"report: {Path(result.report_path)}", file=sys.stderr)
