"""Executors by name: the built-in ones plus any registered under the
``codeloop.executors`` entry point group by third-party packages."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable

from .base import Executor

# name -> "module:attribute", imported lazily so a missing optional extra only
# matters when that executor is asked for.
BUILTIN: dict[str, str] = {
    "local": "executors.local:LocalExecutor",
    "sandbox": "executors.sandbox:SandboxExecutor",
    "pool": "executors.pool:PoolExecutor",
    "restricted": "executors.restricted:RestrictedExecutor",
}

DEFAULT_EXECUTOR = "sandbox"


def _load(target: str) -> Callable[..., Executor]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_executors() -> list[str]:
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group="codeloop.executors"))
    return sorted(names)


class UnknownExecutorError(ValueError):
    pass


def get_executor(name: str | None = None, **options: Any) -> Executor:
    """Build an executor by name; unknown names list the valid ones."""
    name = name or DEFAULT_EXECUTOR
    if name in BUILTIN:
        factory = _load(BUILTIN[name])
    else:
        matches = [ep for ep in entry_points(group="codeloop.executors") if ep.name == name]
        if not matches:
            raise UnknownExecutorError(
                f"unknown executor {name!r}; choose one of: {', '.join(available_executors())}"
            )
        factory = matches[0].load()
    return factory(**options)
