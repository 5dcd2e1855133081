"""One execution on a pool slot: the request, its private pipes, and the zygote's verdict.

The request goes straight to the slot's spare child (forked ahead of time)
together with the write ends of fresh stdout, stderr and report pipes; the
zygote is told to supervise it and answers ``done`` with the wait status and
rusage. An output flood asks the zygote to kill the run; a zygote that stays
silent past the deadline plus a backstop is killed and the run reported as a
SANDBOX_ERROR (never retried: the code may be what killed it).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .base import ExecutionResult, InputFile, Isolation, Limits
from .inside.zygote import encode
from .interpret import interpret
from .isolation import Isolator
from .pool_slots import Slot
from .pool_zygote import ZygoteDied, ZygoteProcess
from .process import PipeCollector, ProcessOutcome

# Larger code goes through a file: a control message must stay well inside the socket buffer.
INLINE_CODE_CHARS = 16 * 1024
INLINE_CODE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunContext:
    """What an execution on a slot needs besides the code: who reports it, and how patient to be."""

    executor: str
    isolation: Isolation
    mode: str  # "python" or "restricted"
    isolator: Isolator
    backstop_s: float

    def error(self, message: str, **fields) -> ExecutionResult:
        return ExecutionResult.sandbox_error(message, executor=self.executor, isolation=self.isolation, **fields)


async def run_on_slot(
    slot: Slot, code: str, files: Sequence[InputFile], limits: Limits, ctx: RunContext
) -> ExecutionResult:
    """Run ``code`` on the slot's zygote. Raises ZygoteDied when the request was never delivered."""
    ws = slot.workspace
    ws.begin()
    try:
        ctx.isolator.prepare(ws.work, slot.uid)  # the slot's sandbox user writes here
        try:
            ws.add_inputs(files)
        except ValueError as exc:  # a bad input file name: reported like the sandbox executor does
            return ctx.error(str(exc))
        request = _request(slot, code, limits, ctx.mode)
        assert slot.zygote is not None  # the pool gives out slots with a live zygote
        proc, baseline, died = await exchange(slot.zygote, request, limits, ctx.backstop_s)
        artifacts = ws.collect_artifacts(limits)
    finally:
        ws.cleanup()
    if died is not None:
        return ctx.error(
            died, stdout=proc.stdout.text(), stderr=proc.stderr.text(), duration_s=proc.duration_s, artifacts=artifacts
        )
    return interpret(
        proc,
        limits=limits,
        executor=ctx.executor,
        isolation=ctx.isolation,
        artifacts=artifacts,
        baseline_memory_bytes=baseline,
    )


def _request(slot: Slot, code: str, limits: Limits, mode: str) -> dict:
    ws = slot.workspace
    paths = slot.paths
    assert paths is not None  # the slots are made with their views
    request = {
        "op": "run",
        "id": uuid.uuid4().hex,
        "workdir": paths.inside(ws.work),
        "limits": limits.to_json(),
        "timeout_s": limits.timeout_s,
        "mode": mode,
    }
    if len(code) <= INLINE_CODE_CHARS and len(json.dumps(code)) <= INLINE_CODE_BYTES:
        request["code"] = code
    else:
        ws.write_code(code)
        request["code_path"] = paths.inside(ws.code_path)
    return request


async def exchange(zygote: ZygoteProcess, request: dict, limits: Limits, backstop_s: float):
    """Send one run request with fresh pipes; collect output, report and the verdict.

    Returns ``(process outcome, baseline RSS, why the zygote failed or None)``.
    """
    pipes = [os.pipe() for _ in range(3)]
    collector = PipeCollector(
        pipes[0][0], pipes[1][0], pipes[2][0], keep_bytes=limits.output_bytes, hard_bytes=limits.output_hard_bytes
    )
    start = time.perf_counter()
    try:
        try:
            await _deliver(zygote, request, pipes)
        finally:
            for _, write_end in pipes:
                os.close(write_end)
        try:
            zygote.send({"op": "run", "id": request["id"], "timeout_s": limits.timeout_s})
        except ZygoteDied:
            pass  # the code may be running already: the verdict below reports the death
        verdict, died = await _await_verdict(zygote, request["id"], collector.flood, limits, backstop_s)
        await collector.drain(0.5 if died is None else 0.05)
    finally:
        collector.stop()
        for read_end, _ in pipes:
            os.close(read_end)
    duration = time.perf_counter() - start
    if died is not None:
        empty = ProcessOutcome(
            None, None, collector.stdout, collector.stderr, bytes(collector.report), duration, None, None
        )
        return empty, 0, died
    assert verdict is not None  # a verdict or a death, never neither
    return _outcome(verdict, collector, duration), int(verdict.get("baseline_rss") or 0), None


async def _deliver(zygote: ZygoteProcess, request: dict, pipes: list[tuple[int, int]]) -> None:
    """Hand the request and the pipes' write ends to the spare child (ZygoteDied: not delivered)."""
    spare = await zygote.take_spare()
    try:
        socket.send_fds(spare, [encode(request)], [w for _, w in pipes])
    except OSError as exc:
        await zygote.kill()
        raise ZygoteDied(f"the pool's child could not take the request: {exc}") from exc
    finally:
        spare.close()


def _outcome(verdict: dict, collector: PipeCollector, duration: float) -> ProcessOutcome:
    status = verdict.get("status")
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    signal_number = -code if code is not None and code < 0 else None
    return ProcessOutcome(
        returncode=None if signal_number or code is None else code,
        signal=signal_number,
        stdout=collector.stdout,
        stderr=collector.stderr,
        report=bytes(collector.report),
        duration_s=duration,
        cpu_time_s=verdict.get("cpu_time_s"),
        peak_memory_bytes=(verdict["maxrss_kb"] * 1024) if verdict.get("maxrss_kb") is not None else None,
        timed_out=bool(verdict.get("timed_out")),
        output_exceeded=collector.flood.is_set(),
    )


async def _await_verdict(
    zygote: ZygoteProcess, request_id: str, flood: asyncio.Event, limits: Limits, backstop_s: float
) -> tuple[dict | None, str | None]:
    """The zygote's ``done`` message; a flood sends ``kill``; a silent zygote is killed."""
    backstop = limits.timeout_s + backstop_s
    receive = asyncio.ensure_future(zygote.receive())
    flooded = asyncio.ensure_future(flood.wait())
    try:
        done, _ = await asyncio.wait({receive, flooded}, timeout=backstop, return_when=asyncio.FIRST_COMPLETED)
        if flooded in done and receive not in done:
            try:
                zygote.send({"op": "kill", "id": request_id})
            except ZygoteDied:
                pass  # the receive below reports the death
            done, _ = await asyncio.wait({receive}, timeout=backstop_s)
        if receive not in done:
            await zygote.kill()
            return None, f"the pool's zygote did not answer within {backstop:g} s; it was killed and will be replaced"
        return await _verdict_for(zygote, request_id, receive, backstop_s)
    except asyncio.CancelledError:
        # The caller gave up mid-run: the zygote's state is unknown, so it is
        # replaced rather than trusted with the next request.
        zygote.kill_now()
        raise
    finally:
        for task in (receive, flooded):
            if not task.done():
                task.cancel()


async def _verdict_for(
    zygote: ZygoteProcess, request_id: str, received: asyncio.Future, backstop_s: float
) -> tuple[dict | None, str | None]:
    """Skip stale verdicts; anything but this request's ``done`` costs the zygote its life."""
    try:
        message = received.result()
        while message.get("op") == "done" and message.get("id") != request_id:
            message = await asyncio.wait_for(zygote.receive(), backstop_s)  # a stale verdict
    except TimeoutError:
        await zygote.kill()
        return None, "the pool's zygote stopped answering; it was killed and will be replaced"
    except ZygoteDied:
        await zygote.kill()
        return None, (
            "the pool's zygote died during the execution (the code may have killed it); "
            "it will be replaced and the execution was not retried"
        )
    if message.get("op") != "done" or message.get("id") != request_id:
        await zygote.kill()
        return None, f"the pool's zygote answered out of turn: {message!r}"
    return message, None
