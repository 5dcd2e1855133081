"""One kernel per session: what the local and remote Jupyter executors share.

:class:`KernelExecutorBase` keeps one kernel per session with an LRU bound,
an idle shutdown and a finalizer, so no kernel outlives its executor; the
messages of each execution are handled by :mod:`executors.kernel_messages`.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import Artifact, BaseExecutor, ExecutionResult, InputFile, Isolation, Limits, Outcome
from .kernel_messages import CellCollector, CellRun, KernelDied, KernelHandle, KernelStartError, run_cell

DEFAULT_SESSION = "default"


@dataclass
class _Session:
    handle: KernelHandle
    lock: asyncio.Lock
    last_used: float
    figures: int = 0
    notice: str = ""  # told to the code's next run: why its earlier state is gone

    def next_figure(self) -> int:
        self.figures += 1
        return self.figures


class KernelExecutorBase(BaseExecutor):
    """One kernel per session id; at most ``max_kernels`` alive at once.

    The least recently used idle kernel is shut down to make room, kernels idle
    for ``idle_timeout_s`` are shut down by a background sweep, and a finalizer
    stops every kernel when the executor is collected or the process exits.
    """

    name = "kernel"
    stateful = True

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        max_kernels: int = 4,
        idle_timeout_s: float = 600.0,
        interrupt_grace_s: float = 2.0,
        startup_timeout_s: float = 60.0,
    ) -> None:
        if max_kernels < 1:
            raise ValueError(f"max_kernels must be at least 1, got {max_kernels}")
        super().__init__(limits)
        self.max_kernels = max_kernels
        self.idle_timeout_s = idle_timeout_s
        self.interrupt_grace_s = interrupt_grace_s
        self.startup_timeout_s = startup_timeout_s
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._sweeper: asyncio.Task | None = None
        self._closed = False
        # Synchronous kill functions by kernel key; the finalizer must not hold self.
        self._cleanups: dict[int, Callable[[], None]] = {}
        self._finalizer = weakref.finalize(self, _run_cleanups, self._cleanups)

    # -- what subclasses provide -------------------------------------------------

    @abc.abstractmethod
    async def start_kernel(self, session: str, limits: Limits) -> KernelHandle:
        """Start a kernel for ``session`` (working directory ready, files none).

        ``limits`` are those of the execution that needs the kernel; a local
        kernel keeps their memory and file limits for its whole life.
        """

    # -- the Executor protocol ----------------------------------------------------

    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        if self._closed:
            raise RuntimeError(f"the {self.name} executor is closed")
        key = session or DEFAULT_SESSION
        start = time.perf_counter()
        self._bind_loop()
        while True:
            try:
                sess = await self._session(key, limits)
            except (KernelStartError, KernelDied) as exc:
                return self._sandbox_error(exc, start)
            async with sess.lock:
                if self._sessions.get(key) is not sess:
                    continue  # evicted, swept or reset while we waited: start afresh
                return await self._execute_locked(key, sess, code, files, limits, start)

    async def _execute_locked(
        self, key: str, sess: _Session, code: str, files: Sequence[InputFile], limits: Limits, start: float
    ) -> ExecutionResult:
        sess.last_used = time.monotonic()
        try:
            await sess.handle.attach()
            await sess.handle.upload(files)
        except KernelDied as exc:
            await self._replace_kernel(key, sess, f"the kernel died before the code ran ({exc})")
            return self._sandbox_error(
                KernelDied(f"the kernel was lost before the code ran ({exc}); it was restarted"), start
            )
        except (KernelStartError, ValueError) as exc:  # ValueError: a bad input file name
            return self._sandbox_error(exc, start)
        collector = CellCollector(limits, sess.next_figure)
        run = await run_cell(
            sess.handle,
            code,
            collector,
            timeout_s=limits.timeout_s,
            interrupt_grace_s=self.interrupt_grace_s,
        )
        result = await self._finish(key, sess, run, limits, start)
        sess.last_used = time.monotonic()
        return result

    async def reset(self, session: str | None = None) -> None:
        """Forget a session: its kernel is shut down, the next run starts afresh."""
        key = session or DEFAULT_SESSION
        sess = self._sessions.pop(key, None)
        if sess is not None:
            self._bind_loop()
            async with sess.lock:
                await self._shutdown(sess.handle)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None and not self._sweeper.done():
            self._sweeper.cancel()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        # In parallel: a graceful kernel shutdown can take a second each.
        await asyncio.gather(*(self._shutdown(s.handle) for s in sessions), return_exceptions=True)
        self._finalizer()

    def sessions(self) -> list[str]:
        """Session ids that currently have a live kernel, oldest use first."""
        return list(self._sessions)

    # -- helpers -------------------------------------------------------------------

    def register_cleanup(self, handle: KernelHandle, kill: Callable[[], None]) -> None:
        self._cleanups[id(handle)] = kill

    def forget_cleanup(self, handle: KernelHandle) -> None:
        self._cleanups.pop(id(handle), None)

    def _bind_loop(self) -> None:
        """Locks and the sweep task belong to one event loop; rebuild them on a new one."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        self._pool_lock = asyncio.Lock()
        for sess in self._sessions.values():
            sess.lock = asyncio.Lock()
        if self.idle_timeout_s > 0:
            period = max(0.2, min(self.idle_timeout_s / 2, 30.0))
            self._sweeper = loop.create_task(_sweep_forever(weakref.ref(self), period))
        else:
            self._sweeper = None

    async def _session(self, key: str, limits: Limits) -> _Session:
        assert self._pool_lock is not None
        sess = self._sessions.get(key)
        if sess is not None:  # no lock: a kernel starting for another session must not delay this one
            self._sessions.move_to_end(key)
            return sess
        async with self._pool_lock:
            sess = self._sessions.get(key)
            if sess is not None:
                self._sessions.move_to_end(key)
                return sess
            await self._make_room()
            try:
                handle = await asyncio.wait_for(self.start_kernel(key, limits), self.startup_timeout_s)
            except TimeoutError:
                raise KernelStartError(
                    f"the {self.name} kernel did not become ready within {self.startup_timeout_s:g} s"
                ) from None
            sess = _Session(handle=handle, lock=asyncio.Lock(), last_used=time.monotonic())
            self._sessions[key] = sess
            return sess

    async def _make_room(self) -> None:
        while len(self._sessions) >= self.max_kernels:
            victim = next((k for k, s in self._sessions.items() if not s.lock.locked()), None)
            if victim is None:
                await asyncio.sleep(0.05)  # every kernel is busy: wait for one to finish
                continue
            sess = self._sessions.pop(victim)
            await self._shutdown(sess.handle)

    async def sweep_idle_once(self) -> None:
        """Shut down kernels idle for longer than ``idle_timeout_s``."""
        now = time.monotonic()
        for key, sess in list(self._sessions.items()):
            idle = not sess.lock.locked() and now - sess.last_used > self.idle_timeout_s
            if idle and self._sessions.get(key) is sess:
                del self._sessions[key]
                await self._shutdown(sess.handle)

    async def _shutdown(self, handle: KernelHandle) -> None:
        try:
            await handle.shutdown()
        finally:
            self.forget_cleanup(handle)

    async def _replace_kernel(self, key: str, sess: _Session, why: str) -> None:
        """A broken kernel is replaced now, so the next run does not wait on it."""
        try:
            await sess.handle.restart()
            sess.notice = why
        except (KernelDied, KernelStartError, OSError) as exc:
            # The kernel cannot be restarted in place: drop it; the next run starts a new one.
            if self._sessions.get(key) is sess:
                del self._sessions[key]
            await self._shutdown(sess.handle)
            sess.notice = f"{why}; restart failed: {exc}"

    async def _finish(self, key: str, sess: _Session, run: CellRun, limits: Limits, start: float) -> ExecutionResult:
        collector = run.collector
        notice, sess.notice = sess.notice, ""
        if run.ended == "idle":
            outcome = Outcome.FAILED if collector.error_type else Outcome.OK
            if collector.error_type == "MemoryError":
                outcome = Outcome.MEMORY_EXCEEDED
        elif run.ended == "dead":
            await self._replace_kernel(key, sess, "the previous kernel died")
            outcome = Outcome.KILLED
            collector.error_type = "KernelDied"
            collector.error_message = (
                f"the kernel died while running the code ({run.detail}); it was restarted and "
                "all variables from earlier runs are gone"
            )
        else:
            cause = run.detail if run.ended == "unresponsive" else run.ended
            if cause == "flood":
                outcome = Outcome.OUTPUT_LIMIT
                collector.error_type = "OutputLimitExceeded"
                collector.error_message = f"output exceeded {limits.output_hard_bytes} bytes and the run was stopped"
            else:
                outcome = Outcome.DEADLINE_EXCEEDED
                collector.error_type = "TimeoutError"
                collector.error_message = f"execution exceeded the {limits.timeout_s:g} s deadline and was interrupted"
            if run.ended == "unresponsive":
                await self._replace_kernel(key, sess, "the previous kernel ignored an interrupt and was restarted")
                collector.error_message += (
                    "; the kernel did not respond to the interrupt and was restarted, "
                    "so all variables from earlier runs are gone"
                )
            else:
                collector.error_message += "; variables from earlier runs are kept"
        artifacts: list[Artifact] = []
        if self._sessions.get(key) is sess:
            try:
                artifacts = await sess.handle.collect_files(limits)
            except (KernelDied, KernelStartError, OSError) as exc:
                collector.stderr.feed(
                    f"\n[codeloop: files written by the code could not be collected: {exc}]\n".encode()
                )
        collector.artifacts.extend(artifacts[: max(0, limits.max_artifacts - len(collector.artifacts))])
        result = collector.result(
            outcome,
            duration_s=time.perf_counter() - start,
            executor=self.name,
            isolation=self.isolation or Isolation.NONE,
        )
        if notice:
            result.stderr = f"[codeloop: {notice}; earlier variables are gone]\n" + result.stderr
        return result

    def _sandbox_error(self, exc: Exception, start: float) -> ExecutionResult:
        return self.error_result(str(exc), error_type=type(exc).__name__, duration_s=time.perf_counter() - start)


async def _sweep_forever(ref: weakref.ref[KernelExecutorBase], period: float) -> None:
    """Holds only a weak reference, so an executor nobody uses can still be collected."""
    while True:
        await asyncio.sleep(period)
        executor = ref()
        if executor is None or executor._closed:
            return
        await executor.sweep_idle_once()
        del executor


def _run_cleanups(cleanups: dict[int, Callable[[], None]]) -> None:
    for kill in list(cleanups.values()):
        try:
            kill()
        except Exception:  # at exit, one failed kill must not stop the others
            pass
    cleanups.clear()
