"""Helpers for driving ``codeloop mcp`` with the MCP SDK's own client.

:class:`ThreadedClient` keeps one SDK ``Client`` connected in a thread with
its own event loop, so synchronous tests can share one connection (the SDK's
client must be entered and left in one task, which module-scoped async
fixtures do not promise). :func:`start_http_server` launches the CLI over
HTTP and returns the URL it prints once it listens.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult

ROOT = Path(__file__).resolve().parent.parent


def stdio_params(*args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    """``python -m orchestrator.cli mcp ARGS`` run from this checkout."""
    return StdioServerParameters(
        command=sys.executable, args=["-m", "orchestrator.cli", "mcp", *args], cwd=str(ROOT), env=env
    )


def http_client(url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)))


class ThreadedClient:
    def __init__(self, make_client: Callable[[], Client], connect_timeout_s: float = 60.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="mcp-test-client")
        self._thread.start()
        self._closing: asyncio.Event | None = None
        self._task: asyncio.Future | None = None
        self.client: Client | None = None
        self._run(self._open(make_client), connect_timeout_s)

    def _run(self, coro, timeout_s: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _open(self, make_client: Callable[[], Client]) -> None:
        ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task = asyncio.ensure_future(self._hold(make_client, ready))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            waiter.cancel()
            self._task.result()  # the connection failed: raise why
            raise RuntimeError("the MCP client closed while connecting")

    async def _hold(self, make_client: Callable[[], Client], ready: asyncio.Event) -> None:
        async with make_client() as client:
            self.client = client
            ready.set()
            assert self._closing is not None
            await self._closing.wait()

    def call(self, tool: str, arguments: dict[str, Any], timeout_s: float = 60.0) -> CallToolResult:
        assert self.client is not None
        return self._run(self.client.call_tool(tool, arguments), timeout_s)

    def call_async(self, tool: str, arguments: dict[str, Any]):
        """Start a call and return its concurrent future (for calls that must overlap)."""
        assert self.client is not None
        return asyncio.run_coroutine_threadsafe(self.client.call_tool(tool, arguments), self._loop)

    def list_tools(self):
        assert self.client is not None
        return self._run(self.client.list_tools(), 30)

    def close(self) -> None:
        async def finish() -> None:
            assert self._closing is not None and self._task is not None
            self._closing.set()
            await asyncio.wait({self._task}, timeout=20)

        try:
            self._run(finish(), 30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def start_http_server(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> tuple[subprocess.Popen, str, list[str]]:
    """Start ``codeloop mcp --transport http --port 0 ARGS``; return it, the URL it serves and its stderr lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "mcp", "--transport", "http", "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    found = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "serving on " in line:
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"codeloop mcp over HTTP did not start: {''.join(lines)[-2000:]}")
    url = next(line for line in lines if "serving on " in line).split("serving on ", 1)[1].split()[0]
    return proc, url, lines


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
