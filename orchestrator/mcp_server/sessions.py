"""Stateful sessions on a kernel-backed executor: admitted up to a bound, ended when idle.

The executor keeps one kernel per session and shuts down kernels idle for
``idle_timeout_s`` (it is built with that setting). This registry adds what a
public server needs on top: a hard bound on live sessions (a new one past it
is refused rather than evicting somebody's state), a notice when a session a
client used before has ended, and access to a session's working directory.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from pathlib import Path

from executors import ExecutionResult, Executor, InputFile, Limits

from .settings import SessionSettings

REMEMBERED_ENDED = 256  # names of ended sessions kept, to tell a returning client its state is gone


class SessionError(Exception):
    """A session cannot be used as asked; the message says why."""


class SessionRegistry:
    def __init__(self, executor: Executor, settings: SessionSettings) -> None:
        if not executor.stateful:
            raise ValueError(f"sessions need a stateful executor; {executor.name!r} keeps no state between runs")
        self.executor = executor
        self.settings = settings
        self._pending: collections.Counter[str] = collections.Counter()  # admitted, kernel maybe not up yet
        self._used: collections.OrderedDict[str, float] = collections.OrderedDict()  # name -> last use
        self._lock = asyncio.Lock()

    def live(self) -> set[str]:
        return set(self.executor.sessions())  # type: ignore[attr-defined]  # stateful executors (checked in __init__) have it

    async def run(
        self, session: str, code: str, *, files: Sequence[InputFile], limits: Limits
    ) -> tuple[ExecutionResult, str]:
        """Run in ``session``; also returns a notice when an earlier state of it has ended."""
        notice = await self._admit(session)
        try:
            result = await self.executor.execute(code, files=files, limits=limits, session=session)
        finally:
            self._pending[session] -= 1
            if self._pending[session] <= 0:
                del self._pending[session]
        self._touch(session)
        return result, notice

    async def _admit(self, session: str) -> str:
        async with self._lock:
            live = self.live()
            notice = ""
            if session not in live and session not in self._pending:
                if session in self._used:
                    notice = (
                        f"session {session!r} had ended (idle for over {self.settings.idle_timeout_s:g} s, or its "
                        "kernel was lost), so it starts afresh: variables and files from earlier calls are gone"
                    )
                busy = live | set(self._pending)
                if len(busy) >= self.settings.max_sessions:
                    raise SessionError(
                        f"too many sessions: {len(busy)} are live (the limit is {self.settings.max_sessions}); "
                        f"call reset_session on one you no longer need, or wait until one has been idle for "
                        f"{self.settings.idle_timeout_s:g} s"
                    )
            self._pending[session] += 1
            return notice

    def _touch(self, session: str) -> None:
        self._used[session] = time.monotonic()
        self._used.move_to_end(session)
        live = self.live()
        ended = [name for name in self._used if name not in live]
        for name in ended[: max(0, len(ended) - REMEMBERED_ENDED)]:
            del self._used[name]

    async def reset(self, session: str) -> bool:
        """End a session; True when it had a live kernel."""
        existed = session in self.live()
        await self.executor.reset(session)
        self._used.pop(session, None)
        return existed

    def work_dir(self, session: str) -> Path:
        if session not in self.live():
            known = "it has ended" if session in self._used else "no call has used it yet"
            raise SessionError(f"session {session!r} is not live ({known}); run_python with it starts it")
        work_dir = getattr(self.executor, "work_dir", None)
        path = work_dir(session) if work_dir is not None else None
        if path is None:
            raise SessionError(
                f"the {self.executor.name!r} executor does not expose a session's files here; use the jupyter executor"
            )
        return path
