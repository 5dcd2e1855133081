"""What a kernel says during one execution, whatever the transport.

A kernel speaks the Jupyter messaging protocol whichever way it is reached
(ZeroMQ for a local kernel, a WebSocket through a Kernel Gateway):

* :class:`KernelHandle` is one live kernel as the executors need it;
* :class:`CellCollector` turns IOPub messages into an :class:`ExecutionResult`
  (streams, ``execute_result``/``display_data`` text, PNG images, errors);
* :func:`run_cell` drives one execution against a deadline: interrupt first,
  and report when the kernel would not stop so the caller can restart it.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Artifact, ExecutionResult, InputFile, Isolation, Limits, Outcome
from .process import StreamCapture

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

    def result(self, outcome: Outcome, *, duration_s: float, executor: str, isolation: Isolation) -> ExecutionResult:
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
    return msg.get("header", {}).get("msg_type") == "status" and (msg.get("content") or {}).get("execution_state") in (
        "restarting",
        "dead",
        "autorestarting",
    )
