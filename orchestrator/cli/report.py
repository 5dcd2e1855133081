"""``codeloop report RUN_DIR``: the summary table, plus PNG plots and report.json next to the store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import EXIT_OK
from ._store import add_store_command


def register(subparsers: Any) -> None:
    parser = add_store_command(
        subparsers,
        "report",
        help="summarise a batch: outcomes, retries, tokens, latency, plots",
        description="Print a summary of RUN_DIR's batch and write report.json, "
        "report-retries.png and report-latency.png into RUN_DIR.",
        handler=run,
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from ..batch.report import REPORT_JSON, report_rows, summarise, write_plots
    from ._store import open_run_store

    with open_run_store(args.run_dir) as store:
        report, latencies = summarise(store)
    run_dir = Path(args.run_dir)
    (run_dir / REPORT_JSON).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    written = [] if args.no_plots else write_plots(report, latencies, run_dir)
    settings = report.settings
    table = Table(
        title=f"batch {run_dir}", caption=f"model {settings.get('model')}, executor {settings.get('executor')}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in report_rows(report):
        table.add_row(label, value)
    console = Console()
    console.print(table)
    for path in [run_dir / REPORT_JSON, *written]:
        console.print(f"wrote {path}")
    return EXIT_OK
