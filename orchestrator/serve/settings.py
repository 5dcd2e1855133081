"""What a ``codeloop serve`` server runs with: its backends and its limits.

Plain data, passed in when the app is built; nothing here reads the
environment (the CLI does, once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from executors.base import Executor

from ..config import LoopConfig
from ..models.base import Model

# Gemini model ids are words with dots and dashes; aliases share the URL segment.
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one server. ``api_key``: when set, every request must carry
    it (``x-goog-api-key`` header or ``key=`` query); it is never logged.
    ``max_concurrent_runs``: generate requests running at once; more get 429
    with ``Retry-After: retry_after_s``. ``run_timeout_s`` bounds one whole
    request (every model call and execution of its loop)."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 20 * 1024 * 1024
    max_concurrent_runs: int = 4
    run_timeout_s: float = 300.0
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeSettings.port must be within [0, 65535], got {self.port}")
        for name in ("max_body_bytes", "max_concurrent_runs", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeSettings.{name} must be at least 1, got {getattr(self, name)}")
        if self.run_timeout_s <= 0:
            raise ValueError(f"ServeSettings.run_timeout_s must be positive, got {self.run_timeout_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("ServeSettings.api_key is empty: give a key or None for no key")


@dataclass
class Backend:
    """A model clients reach as ``models/{alias}``. ``loop`` is the
    :class:`LoopConfig` of its runs (max_retries, limits, tools...)."""

    alias: str
    model: Model
    executor: Executor
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if not ALIAS_PATTERN.match(self.alias):
            raise ValueError(
                f"backend alias {self.alias!r} must be letters, digits, '.', '_' or '-' "
                "(it is the {model} of the URL)"
            )

    @property
    def spec(self) -> str:
        return getattr(self.model, "name", type(self.model).__name__)


def backends_by_alias(backends: list[Backend]) -> dict[str, Backend]:
    """The backends keyed by alias; two with one alias is an error."""
    table: dict[str, Backend] = {}
    for backend in backends:
        if backend.alias in table:
            raise ValueError(f"two backends are named {backend.alias!r}; give each --model its own ALIAS=")
        table[backend.alias] = backend
    if not table:
        raise ValueError("a server needs at least one backend model")
    return table
