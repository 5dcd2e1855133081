"""structlog set-up for the CLI (the edge), with secrets redacted.

Library code only calls ``structlog.get_logger("codeloop")`` and logs events
with stable names (``run.start``, ``model.response``, ``execution.finished``,
``run.retry``, ``run.done``) and fields (``run_id``, ``step``, ``outcome``,
``duration_ms``, ``tokens``). How they are rendered is decided here, once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

# structlog is imported where it is used: importing it imports rich (for its
# tracebacks), and `import orchestrator` stays light until something logs.

# Shapes of common API keys, redacted even when we were never told the value.
KEY_PATTERNS = re.compile(
    r"AIza[0-9A-Za-z_\-]{30,}"  # Google API keys
    r"|sk-[A-Za-z0-9_\-]{16,}"  # OpenAI-style keys
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{16,}"
)
SECRET_ENV_NAMES = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
REDACTED = "[REDACTED]"


def secrets_from_env(env: Mapping[str, str]) -> list[str]:
    """Values of variables whose names say they are secrets."""
    return [v for k, v in env.items() if SECRET_ENV_NAMES.search(k) and len(v) >= 6]


class Redactor:
    """A structlog processor that removes known secret values and key-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return KEY_PATTERNS.sub(REDACTED, text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        return {k: self._clean(v) for k, v in event_dict.items()}


def configure_logging(
    *,
    json_lines: bool = False,
    level: str = "warning",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Readable console lines by default, JSON lines with ``json_lines``.

    Secret values from ``secrets`` and from secret-named variables of ``env``
    (the process environment by default) are redacted from every event.
    """
    import structlog

    env = os.environ if env is None else env
    redactor = Redactor([*secrets, *secrets_from_env(env)])
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Look sys.stderr up when a logger is made, not now: it may be replaced later.
        logger_factory=lambda *_: structlog.PrintLogger(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "codeloop") -> Any:
    """The library's logger: as configured by the application when it has
    configured structlog, otherwise warnings and errors only, on stderr, so
    that importing codeloop never floods a user's stdout."""
    import structlog

    if structlog.is_configured():
        return structlog.get_logger(name)
    return _quiet_logger()


@functools.lru_cache(maxsize=1)
def _quiet_logger() -> Any:
    # Built once: scanning the environment for secrets on every run cost more
    # than the rest of the loop's own work.
    import structlog

    return structlog.wrap_logger(
        _StderrLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[
            structlog.processors.add_log_level,
            Redactor(secrets_from_env(os.environ)),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
    )


class _StderrLogger:
    """Prints to whatever ``sys.stderr`` is at the time (tests and apps replace it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg
