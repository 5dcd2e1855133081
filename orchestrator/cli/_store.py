"""Opening an existing batch's store, for the subcommands that read one (export, report)."""

from __future__ import annotations

from ..batch.store import BatchStore, StoreError
from . import UsageError


def open_run_store(run_dir: str) -> BatchStore:
    """RUN_DIR's store, never a new one: a directory without a readable store is a usage error saying why."""
    try:
        return BatchStore(run_dir, create=False)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
