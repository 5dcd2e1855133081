"""Opening an existing batch's store, for the subcommands that read one (export, report)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..batch.store import BatchStore, StoreError
from . import UsageError


def open_run_store(run_dir: str) -> BatchStore:
    """RUN_DIR's store, never a new one: a directory without a readable store is a usage error saying why."""
    try:
        return BatchStore(run_dir, create=False)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc


def add_store_command(
    subparsers: Any, name: str, *, help: str, description: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A subcommand that reads RUN_DIR's store: its parser, with RUN_DIR and the handler set."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.set_defaults(handler=handler)
    return parser
