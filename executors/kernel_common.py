"""What the local and remote Jupyter executors share.

A kernel speaks the Jupyter messaging protocol whichever way it is reached
(ZeroMQ for a local kernel, a WebSocket through a Kernel Gateway), so the
parts that do not care about the transport live here:

* :class:`CellCollector` turns IOPub messages into an :class:`ExecutionResult`
  (streams, ``execute_result``/``display_data`` text, PNG images, errors);
* :func:`run_cell` drives one execution against a deadline: interrupt first,
  and report when the kernel would not stop so the caller can restart it;
* :class:`KernelExecutorBase` keeps one kernel per session with an LRU bound,
  an idle shutdown and a finalizer, so no kernel outlives its executor.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import collections
import re
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Artifact, ExecutionResult, InputFile, Limits, Outcome
from .process import StreamCapture

DEFAULT_SESSION = "default"

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """IPython colours its tracebacks; models and logs want plain text."""
    return _ANSI.sub("", text)


class KernelDied(Exception):
    """The kernel process went away while we were waiting for it."""


class KernelStartError(Exception):
    """A kernel could not be started or reached; the message says why."""


@dataclass
class CellCollector:
    """Accumulates the IOPub messages of one execution."""

    limits: Limits
    figure_counter: Callable[[], int]
    stdout: StreamCapture = field(init=False)
    stderr: StreamCapture = field(init=False)
    results: list[str] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    idle: bool = False
    _artifact_bytes: int = 0

    def __post_init__(self) -> None:
        self.stdout = StreamCapture(self.limits.output_bytes)
        self.stderr = StreamCapture(self.limits.output_bytes)

    @property
    def output_total(self) -> int:
        return self.stdout.total + self.stderr.total

    @property
    def flooded(self) -> bool:
        return self.output_total > self.limits.output_hard_bytes

    def feed(self, msg_type: str, content: dict[str, Any]) -> None:
        if msg_type == "stream":
            target = self.stderr if content.get("name") == "stderr" else self.stdout
            target.feed(str(content.get("text", "")).encode("utf-8"))
        elif msg_type in ("execute_result", "display_data"):
            self._feed_display(content.get("data") or {}, is_result=msg_type == "execute_result")
        elif msg_type == "error":
            self.error_type = str(content.get("ename") or "Error")
            self.error_message = str(content.get("evalue") or "")[:2000]
            lines = content.get("traceback") or []
            self.traceback = strip_ansi("\n".join(str(line) for line in lines))
        elif msg_type == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def _feed_display(self, data: dict[str, Any], *, is_result: bool) -> None:
        png = data.get("image/png")
        if png:
            raw = base64.b64decode(png)
            name = f"figure_{self.figure_counter()}.png"
            too_big = (
                len(raw) > self.limits.artifact_bytes
                or self._artifact_bytes + len(raw) > self.limits.artifacts_total_bytes
            )
            if len(self.artifacts) < self.limits.max_artifacts:
                if too_big:
                    self.artifacts.append(Artifact(name=name, data=b"", mime_type="image/png", truncated=True))
                else:
                    self._artifact_bytes += len(raw)
                    self.artifacts.append(Artifact(name=name, data=raw, mime_type="image/png"))
            return  # the text/plain of a figure is only "<Figure size ...>"
        text = data.get("text/plain")
        if text is not None and (is_result or text):
            self.results.append(strip_ansi(str(text))[: self.limits.output_bytes])

    def result(self, outcome: Outcome, *, duration_s: float, executor: str, isolation: str) -> ExecutionResult:
        return ExecutionResult(
            outcome=outcome,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            error_type=self.error_type,
            error_message=self.error_message,
            traceback=self.traceback,
            duration_s=duration_s,
            artifacts=list(self.artifacts),
            stdout_truncated=self.stdout.truncated,
            stderr_truncated=self.stderr.truncated,
            executor=executor,
            isolation=isolation,
            results=list(self.results),
        )


class KernelHandle(abc.ABC):
    """One live kernel as the executors need it, whatever the transport."""

    @abc.abstractmethod
    async def send_execute(self, code: str) -> str:
        """Send an execute_request; return its msg_id."""

    @abc.abstractmethod
    async def next_iopub(self, timeout: float) -> dict[str, Any] | None:
        """The next IOPub message, None after ``timeout``; raises KernelDied."""

    @abc.abstractmethod
    async def interrupt(self) -> None: ...

    @abc.abstractmethod
    async def restart(self) -> None:
        """A fresh interpreter in the same working directory; state is lost."""

    @abc.abstractmethod
    async def shutdown(self) -> None: ...

    @abc.abstractmethod
    async def upload(self, files: Sequence[InputFile]) -> None: ...

    @abc.abstractmethod
    async def collect_files(self, limits: Limits) -> list[Artifact]:
        """Files written or changed in the working directory since last asked."""

    @abc.abstractmethod
    async def attach(self) -> None:
        """(Re)connect the client side to the running event loop."""


@dataclass
class CellRun:
    collector: CellCollector
    ended: str  # "idle", "deadline", "unresponsive", "dead", "flood"
    detail: str = ""


async def run_cell(
    handle: KernelHandle,
    code: str,
    collector: CellCollector,
    *,
    timeout_s: float,
    interrupt_grace_s: float,
) -> CellRun:
    """Execute ``code`` and gather its output until the kernel is idle again.

    On the deadline (or an output flood) the kernel is interrupted; if it is
    not idle within ``interrupt_grace_s`` the run ends as "unresponsive" and
    the caller restarts the kernel.
    """
    loop = asyncio.get_running_loop()
    try:
        msg_id = await handle.send_execute(code)
    except KernelDied as exc:
        return CellRun(collector, "dead", str(exc))
    deadline = loop.time() + timeout_s
    ended = "deadline"
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            msg = await handle.next_iopub(remaining)
            if msg is None:
                continue
            if _parent_id(msg) != msg_id:
                continue
            collector.feed(msg["header"]["msg_type"], msg.get("content") or {})
            if collector.idle:
                return CellRun(collector, "idle")
            if collector.flooded:
                ended = "flood"
                break
        # Deadline or flood: ask the kernel to stop, keep what it already said.
        keep_error = (collector.error_type, collector.error_message, collector.traceback)
        await handle.interrupt()
        grace_end = loop.time() + interrupt_grace_s
        while loop.time() < grace_end:
            msg = await handle.next_iopub(grace_end - loop.time())
            if msg is None or _parent_id(msg) != msg_id:
                continue
            msg_type = msg["header"]["msg_type"]
            if msg_type == "status":
                collector.feed(msg_type, msg.get("content") or {})
                if collector.idle:
                    collector.error_type, collector.error_message, collector.traceback = keep_error
                    return CellRun(collector, ended)
            elif msg_type != "error" and not collector.flooded:
                collector.feed(msg_type, msg.get("content") or {})
        collector.error_type, collector.error_message, collector.traceback = keep_error
        return CellRun(collector, "unresponsive", ended)
    except KernelDied as exc:
        return CellRun(collector, "dead", str(exc))


def _parent_id(msg: dict[str, Any]) -> str | None:
    return (msg.get("parent_header") or {}).get("msg_id")


def is_kernel_gone_status(msg: dict[str, Any]) -> bool:
    """Servers announce a lost kernel with a status message that has no parent."""
    return msg.get("header", {}).get("msg_type") == "status" and (msg.get("content") or {}).get(
        "execution_state"
    ) in ("restarting", "dead", "autorestarting")


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


class KernelExecutorBase(abc.ABC):
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
        self.limits = limits or Limits()
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

    @property
    @abc.abstractmethod
    def isolation_level(self) -> str: ...

    # -- the Executor protocol ----------------------------------------------------

    async def execute(
        self,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        limits: Limits | None = None,
        session: str | None = None,
    ) -> ExecutionResult:
        if self._closed:
            raise RuntimeError(f"the {self.name} executor is closed")
        limits = limits or self.limits
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
            except asyncio.TimeoutError:
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
            if not sess.lock.locked() and now - sess.last_used > self.idle_timeout_s:
                if self._sessions.get(key) is sess:
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
                collector.stderr.feed(f"\n[codeloop: files written by the code could not be collected: {exc}]\n".encode())
        collector.artifacts.extend(artifacts[: max(0, limits.max_artifacts - len(collector.artifacts))])
        result = collector.result(
            outcome,
            duration_s=time.perf_counter() - start,
            executor=self.name,
            isolation=self.isolation_level,
        )
        if notice:
            result.stderr = f"[codeloop: {notice}; earlier variables are gone]\n" + result.stderr
        return result

    def _sandbox_error(self, exc: Exception, start: float) -> ExecutionResult:
        return ExecutionResult(
            outcome=Outcome.SANDBOX_ERROR,
            error_type=type(exc).__name__,
            error_message=str(exc),
            duration_s=time.perf_counter() - start,
            executor=self.name,
            isolation=self.isolation_level,
        )


async def _sweep_forever(ref: "weakref.ref[KernelExecutorBase]", period: float) -> None:
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
