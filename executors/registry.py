"""Executors by name: every executor, built in or a third party's, is an entry
point of the ``codeloop.executors`` group (codeloop's own are listed once, in
its pyproject.toml; see :mod:`executors.plugins`)."""

from __future__ import annotations

import functools
from typing import Any

from .base import Executor
from .plugins import PluginTable

GROUP = "codeloop.executors"
# The default everywhere (run, batches, the bench, the CLI): the isolated one.
DEFAULT_EXECUTOR = "sandbox"


class UnknownExecutorError(ValueError):
    pass


@functools.cache
def default_executors() -> PluginTable:
    """The installed (and checked-out) executors, looked up once per process."""
    return PluginTable.discover(GROUP)


def available_executors(table: PluginTable | None = None) -> list[str]:
    return (table or default_executors()).names()


def get_executor(name: str | None = None, *, table: PluginTable | None = None, **options: Any) -> Executor:
    """Build an executor by name (default: :data:`DEFAULT_EXECUTOR`) from
    ``table`` (default: the installed ones); unknown names list the valid ones."""
    table = table or default_executors()
    name = name or DEFAULT_EXECUTOR
    if name not in table:
        raise UnknownExecutorError(f"unknown executor {name!r}; choose one of: {', '.join(table.names())}")
    return table.load(name)(**options)
