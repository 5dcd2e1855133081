"""Retries for model calls: exponential backoff with jitter, shared by every
provider.

We retry ourselves instead of through each SDK's retry options so that both
providers behave the same, retries are counted and logged, a ``Retry-After``
header is honoured, and tests can use tiny delays.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..logs import get_logger
from .base import ModelError, RateLimitError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` counts the first request: 5 means up to 4 retries.
    The n-th retry waits ``initial_delay_s * multiplier**(n-1)`` capped at
    ``max_delay_s``, times a random factor in ``[1 - jitter, 1 + jitter]``."""

    attempts: int = 5
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    timeout_s: float | None = 300.0  # per request (long thinking answers take minutes); None: no limit

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")

    def delay_s(self, retry: int, rng: random.Random) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (retry - 1))
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(**data)


@dataclass
class CallStats:
    """What a model's calls cost in requests: per model instance, for reports."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    failures: int = 0  # calls that ended in an error after retries
    declined: int = 0  # calls the server refused as unsupported, sent again in another form (tools off)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], ModelError | None],
    stats: CallStats,
    model: str,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    declined: Callable[[ModelError], bool] | None = None,
) -> tuple[T, int]:
    """Run ``call`` until it succeeds, retrying errors that ``classify`` marks
    retryable. Returns the result and the number of requests it took.
    Raises the classified :class:`ModelError`, not the SDK's own exception,
    which may hold the request and its key header. Exceptions ``classify``
    does not know (None) are bugs and propagate unchanged. Errors for which
    ``declined`` is true are the caller's cue to send the call another way:
    raised all the same, but counted as declined, not failed."""
    rng = rng or random.Random()
    for attempt in range(1, policy.attempts + 1):
        stats.requests += 1
        try:
            return await call(), attempt
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = classify(exc)
            if error is None:
                raise
        if not error.retryable or attempt == policy.attempts:
            if declined is not None and declined(error):
                stats.declined += 1
            else:
                stats.failures += 1
            if error.retryable:
                error.args = (f"{error.args[0]} (gave up after {attempt} attempts)",)
            raise error from None
        delay = policy.delay_s(attempt, rng)
        if isinstance(error, RateLimitError) and error.retry_after_s is not None:
            delay = max(delay, min(error.retry_after_s, policy.max_delay_s))
        stats.retries += 1
        get_logger().warning(
            "model_retry",
            model=model,
            attempt=attempt,
            status=error.status_code,
            delay_s=round(delay, 3),
            error=str(error),
        )
        await sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


async def first_chunk(stream: AsyncIterable[T]) -> tuple[AsyncIterator[T], T]:
    """The stream's iterator and its first chunk. Run inside the retried call,
    so a stream that fails before its first chunk is asked for again; one
    that ends without any is a malformed answer (retryable too)."""
    iterator = aiter(stream)
    first = await anext(iterator, None)
    if first is None:
        raise ValueError("the stream ended before any event arrived")
    return iterator, first


async def next_chunk(
    iterator: AsyncIterator[T],
    *,
    classify: Callable[[BaseException], ModelError | None],
    stats: CallStats,
    what: str,
) -> T | None:
    """The next chunk of an open stream (None at its end). A stream that
    breaks off is not retried (its text was already shown): the error is
    counted and raised as a :class:`ModelError` naming ``what`` broke off."""
    try:
        return await anext(iterator, None)
    except Exception as exc:
        error = classify(exc)
        if error is None:
            raise
        stats.failures += 1
        raise ModelError(f"{what} broke off: {error}", status_code=error.status_code) from None


class RetryingProvider:
    """The retry plumbing a hosted provider's model shares: its calls go through
    :func:`call_with_retries` with its own policy, stats, name and seeded rng,
    and its stream's errors, like its calls', are sorted by its ``_classify``."""

    name: str
    retry: RetryPolicy
    stats: CallStats
    _rng: random.Random
    _classify: Callable[[BaseException], ModelError | None]

    async def _with_retries(
        self, call: Callable[[], Awaitable[T]], *, declined: Callable[[ModelError], bool] | None = None
    ) -> tuple[T, int]:
        return await call_with_retries(
            call,
            policy=self.retry,
            classify=self._classify,
            stats=self.stats,
            model=self.name,
            rng=self._rng,
            declined=declined,
        )

    async def _next_chunk(self, iterator: AsyncIterator[T], what: str) -> T | None:
        return await next_chunk(iterator, classify=self._classify, stats=self.stats, what=what)
