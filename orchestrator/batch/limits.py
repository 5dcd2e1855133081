"""Adapters that bound how hard a batch pushes its model and executor.

:class:`BoundedExecutor` caps concurrent executions (the executor pool size)
and :class:`GatedModel` caps concurrent model calls; both implement the same
protocol as what they wrap, so the orchestrator loop needs no batch logic.
:class:`BackoffGate` is the shared backoff: when one call is rate limited
(HTTP 429), every worker waits until the pause is over.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from executors import jsondata
from executors.base import ExecutionResult, Executor, InputFile, Limits

from ..models.base import Model, RateLimitError
from ..types import Conversation, ModelTurn, ToolSpec


class BoundedExecutor:
    """An :class:`Executor` that lets at most ``limit`` executions run at once."""

    def __init__(self, inner: Executor, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"execution concurrency must be at least 1, got {limit}")
        self.inner = inner
        self.wrapped = inner  # the loop reads the model's traits through it
        self.name = inner.name
        self.stateful = inner.stateful
        self.limits = getattr(inner, "limits", None)  # the loop's default limits come from the executor
        self._slots = asyncio.Semaphore(limit)

    async def execute(
        self, code: str, *, files: Sequence[InputFile] = (), limits: Limits | None = None, session: str | None = None
    ) -> ExecutionResult:
        async with self._slots:
            return await self.inner.execute(code, files=files, limits=limits, session=session)

    async def reset(self, session: str | None = None) -> None:
        await self.inner.reset(session)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True)
class BackoffPolicy:
    """The shared rate-limit backoff: first pause, longest pause, and how many
    429s one model call may meet before its item is recorded as an error."""

    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_rate_limit_retries: int = 8

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackoffPolicy:
        return jsondata.from_json(cls, data)


class BackoffGate:
    """A pause shared by every worker of a batch.

    Each rate-limited call extends the pause to ``now + delay``, where the
    delay is the server's ``Retry-After`` when it sent one, else an
    exponential backoff over consecutive waves of 429s (reset by any success). Waiters
    add a little jitter so they do not all hit the model at the same instant.
    """

    def __init__(
        self,
        *,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.jitter = jitter
        self._clock = clock
        self._rng = rng or random.Random()
        self._paused_until = 0.0
        self._consecutive = 0
        self.trips = 0  # rate-limited calls seen

    @property
    def paused_until(self) -> float:
        """When calls may resume, on this gate's clock (in the past when not paused)."""
        return self._paused_until

    def trip(self, retry_after_s: float | None = None) -> float:
        """Record a 429; returns the delay from now until calls resume."""
        self.trips += 1
        now = self._clock()
        if now >= self._paused_until:
            # A new wave of 429s escalates the backoff; the other calls that
            # were in flight when this pause began only join it.
            self._consecutive += 1
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, self._consecutive - 1))
        delay = min(self.max_delay_s, retry_after_s) if retry_after_s is not None else backoff
        until = max(self._paused_until, now + delay)
        self._paused_until = until
        return until - now

    def succeeded(self) -> None:
        self._consecutive = 0

    async def wait(self) -> None:
        while True:
            remaining = self._paused_until - self._clock()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining + self._rng.uniform(0, self.jitter * remaining))


class RateLimitExhausted(RateLimitError):
    """A call stayed rate limited through every backoff the batch allows."""


class GatedModel:
    """A :class:`Model` that waits out the shared backoff, holds one of the
    batch's model-call slots while calling, and retries rate-limited calls
    (the same request again: the item's conversation is not lost).

    One is made per item so ``rate_limited`` counts that item's 429s.
    """

    def __init__(
        self,
        inner: Model,
        *,
        gate: BackoffGate,
        slots: asyncio.Semaphore,
        max_rate_limit_retries: int = 8,
        on_rate_limit: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.wrapped = inner  # the loop reads the model's traits through it
        self.name = inner.name
        self._gate = gate
        self._slots = slots
        self._max_retries = max_rate_limit_retries
        self._on_rate_limit = on_rate_limit
        self.rate_limited = 0

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        failures = 0
        while True:
            await self._gate.wait()
            async with self._slots:
                await self._gate.wait()  # a pause may have begun while this worker queued for a slot
                try:
                    turn = await self.inner.generate(conversation, tools)
                except RateLimitError as exc:
                    failures += 1
                    self.rate_limited += 1
                    self._gate.trip(exc.retry_after_s)
                    if self._on_rate_limit:
                        self._on_rate_limit()
                    if failures > self._max_retries:
                        raise RateLimitExhausted(
                            f"still rate limited after {self._max_retries} backoffs: {exc}",
                            retry_after_s=exc.retry_after_s,
                        ) from exc
                    continue
            self._gate.succeeded()
            return turn
