"""Run one child process asynchronously with capped output, a deadline and real rusage.

Shared by the process-based executors. It uses a pidfd to learn when the child
exits and ``os.wait4`` to reap it, so CPU time and peak memory come from the
kernel rather than from the child's own word. Output is read as it arrives:
the first ``keep_bytes`` of each stream are kept, and a flood past
``hard_bytes`` stops the child. The whole process group is killed on every
exit path, so nothing the child started outlives the call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil


@dataclass
class StreamCapture:
    keep_bytes: int
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep_bytes - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


MAX_REPORT_BYTES = 16 * 1024**2


class PipeCollector:
    """Reads a child's stdout, stderr and report pipes on the event loop.

    Output is capped per stream (:class:`StreamCapture`); ``flood`` is set
    when stdout and stderr together pass ``hard_bytes``; ``all_closed`` when
    every pipe reached end-of-file.
    """

    def __init__(self, stdout_fd: int, stderr_fd: int, report_fd: int | None, *, keep_bytes: int, hard_bytes: int):
        self.loop = asyncio.get_running_loop()
        self.stdout = StreamCapture(keep_bytes)
        self.stderr = StreamCapture(keep_bytes)
        self.report = bytearray()
        self.hard_bytes = hard_bytes
        self.flood = asyncio.Event()
        self.all_closed = asyncio.Event()
        self._sinks: dict[int, StreamCapture | bytearray] = {stdout_fd: self.stdout, stderr_fd: self.stderr}
        if report_fd is not None:
            self._sinks[report_fd] = self.report
        for fd in self._sinks:
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._on_readable, fd)

    def _on_readable(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        sink = self._sinks.get(fd)
        if not chunk:
            self.loop.remove_reader(fd)
            self._sinks.pop(fd, None)
            if not self._sinks:
                self.all_closed.set()
            return
        if isinstance(sink, StreamCapture):
            sink.feed(chunk)
            if self.stdout.total + self.stderr.total > self.hard_bytes:
                self.flood.set()
        elif sink is not None and len(sink) < MAX_REPORT_BYTES:
            sink += chunk

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every pipe to close; True if they did."""
        try:
            await asyncio.wait_for(self.all_closed.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def stop(self) -> None:
        """Stop reading (the caller closes the descriptors)."""
        for fd in list(self._sinks):
            self.loop.remove_reader(fd)
        self._sinks.clear()


@dataclass
class ProcessOutcome:
    returncode: int | None  # exit status, or None when ended by a signal
    signal: int | None
    stdout: StreamCapture
    stderr: StreamCapture
    report: bytes  # what the child wrote on its result descriptor
    duration_s: float
    cpu_time_s: float | None
    peak_memory_bytes: int | None
    timed_out: bool = False
    output_exceeded: bool = False
    spawn_error: str | None = None


def kill_tree(pid: int) -> None:
    """Kill a process, its process group and every descendant we can still see."""
    try:
        victims = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        victims = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


async def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout_s: float,
    keep_bytes: int,
    hard_bytes: int,
    with_report_fd: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    report_fd_placeholder: str = "{REPORT_FD}",
) -> ProcessOutcome:
    """Spawn ``argv``; ``{REPORT_FD}`` in any argument becomes the report descriptor."""
    report_r = report_w = -1
    if with_report_fd:
        report_r, report_w = os.pipe()
        argv = [a.replace(report_fd_placeholder, str(report_w)) for a in argv]
    start = time.perf_counter()
    try:
        proc = _spawn(argv, cwd=cwd, env=env, pass_fds=(report_w,) if with_report_fd else (), preexec_fn=preexec_fn)
    except OSError as exc:
        for fd in (report_r, report_w):
            if fd >= 0:
                os.close(fd)
        empty = StreamCapture(keep_bytes)
        return ProcessOutcome(None, None, empty, StreamCapture(keep_bytes), b"", 0.0, None, None, spawn_error=str(exc))
    if with_report_fd:
        os.close(report_w)
    assert proc.stdout is not None and proc.stderr is not None  # started with pipes
    pipes = PipeCollector(
        proc.stdout.fileno(),
        proc.stderr.fileno(),
        report_r if with_report_fd else None,
        keep_bytes=keep_bytes,
        hard_bytes=hard_bytes,
    )
    try:
        rusage, timed_out, exceeded = await _supervise(proc, pipes, timeout_s)
    finally:
        pipes.stop()
        kill_tree(proc.pid)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        if with_report_fd:
            os.close(report_r)
        _reap_if_cancelled(proc)
    sig = -proc.returncode if proc.returncode < 0 else None
    return ProcessOutcome(
        returncode=None if sig else proc.returncode,
        signal=sig,
        stdout=pipes.stdout,
        stderr=pipes.stderr,
        report=bytes(pipes.report),
        duration_s=time.perf_counter() - start,
        cpu_time_s=rusage.ru_utime + rusage.ru_stime,
        peak_memory_bytes=rusage.ru_maxrss * 1024,
        timed_out=timed_out,
        output_exceeded=exceeded,
    )


def _spawn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    pass_fds: tuple[int, ...],
    preexec_fn: Callable[[], None] | None,
) -> subprocess.Popen:
    """Start the child in a session of its own (so its whole group can be killed), piped."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
        start_new_session=True,
        preexec_fn=preexec_fn,
        close_fds=True,
    )


async def _supervise(proc: subprocess.Popen, pipes: PipeCollector, timeout_s: float):
    """Wait for the exit, a flood or the deadline (killing the tree for the last two),
    drain the pipes and reap: ``(rusage, timed_out, output_exceeded)``."""
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, exited.set)
    timed_out = exceeded = False
    try:
        waiters = [asyncio.ensure_future(e.wait()) for e in (exited, pipes.flood)]
        _done, pending = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        if pipes.flood.is_set():
            exceeded = True
            kill_tree(proc.pid)
        elif not exited.is_set():
            timed_out = True
            kill_tree(proc.pid)
        await exited.wait()
        # Drain what the child left in the pipes; a grandchild holding them open
        # must not keep us waiting, so the group is killed after a short grace.
        if not await pipes.drain(0.2):
            kill_tree(proc.pid)
            await pipes.drain(0.5)
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return rusage, timed_out, exceeded


def _reap_if_cancelled(proc: subprocess.Popen) -> None:
    """A cancelled run was never waited for: reap it so no zombie is left."""
    if proc.returncode is None:
        try:
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
        except ChildProcessError:
            pass
