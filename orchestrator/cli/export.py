"""``codeloop export RUN_DIR --format jsonl|csv``: the stored results, one record per item."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import EXIT_OK
from ._store import add_store_command


def register(subparsers: Any) -> None:
    parser = add_store_command(
        subparsers,
        "export",
        help="export a batch's results as JSONL or CSV",
        description="Write one record per item of RUN_DIR's batch, in input order. "
        "JSONL carries each full RunResult; CSV one flat row per item.",
        handler=run,
    )
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    from ..batch.report import export
    from ._store import open_run_store

    with open_run_store(args.run_dir) as store:
        if args.output == "-":
            try:
                count = export(store, sys.stdout, args.format)
                sys.stdout.flush()
            except BrokenPipeError:  # `codeloop export RUN | head`: the reader left, not an error
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return EXIT_OK
        else:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                count = export(store, out, args.format)
    print(f"codeloop export: {count} items", file=sys.stderr)
    return EXIT_OK
