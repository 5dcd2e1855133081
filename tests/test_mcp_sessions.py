"""Sessions of ``codeloop mcp`` ending when idle, and a kernel executor serving calls
without a session, through the SDK's client connected to the server in process."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("jupyter_client")

from mcp import Client

from executors import Limits
from executors.jupyter import JupyterExecutor
from orchestrator.mcp_server import SandboxTools, SessionSettings, ToolSettings, build_server

IDLE_S = 1.0


@pytest.fixture
async def kernel_server():
    settings = ToolSettings(
        limits=Limits(timeout_s=10), sessions=SessionSettings(max_sessions=2, idle_timeout_s=IDLE_S)
    )
    # As the CLI builds them for --executor jupyter: one executor for one-off runs, one for sessions.
    one_off = JupyterExecutor(limits=settings.limits)
    sessions = JupyterExecutor(limits=settings.limits, max_kernels=2, idle_timeout_s=IDLE_S)
    tools = SandboxTools(one_off, settings, session_executor=sessions)
    yield tools, build_server(tools)
    await tools.aclose()


async def test_an_idle_session_ends_and_the_client_is_told(kernel_server):
    tools, server = kernel_server
    async with Client(server) as client:
        first = await client.call_tool("run_python", {"code": "x = 1", "session": "idle"})
        assert first.structured_content["outcome"] == "OK" and first.structured_content["notice"] is None
        for _ in range(50):  # the executor's sweep runs every IDLE_S / 2
            await asyncio.sleep(0.2)
            if "idle" not in tools.sessions.live():
                break
        assert "idle" not in tools.sessions.live(), "the idle session was not ended"
        listing = await client.call_tool("list_files", {"session": "idle"})
        assert listing.is_error and "it has ended" in listing.content[0].text
        again = await client.call_tool("run_python", {"code": "print(x)", "session": "idle"})
        data = again.structured_content
        assert data["error"]["type"] == "NameError"
        assert "had ended" in data["notice"] and "starts afresh" in data["notice"]
        assert "notice: session 'idle' had ended" in again.content[0].text


async def test_a_kernel_executor_without_a_session_keeps_nothing(kernel_server):
    tools, server = kernel_server
    async with Client(server) as client:
        first = await client.call_tool("run_python", {"code": "leak = 1\nprint('set')"})
        assert first.structured_content["stdout"] == "set\n" and first.structured_content["executor"] == "jupyter"
        second = await client.call_tool("run_python", {"code": "print(leak)"})
        assert second.structured_content["error"]["type"] == "NameError"
    assert tools.executor.sessions() == []  # each one-off kernel was shut down
