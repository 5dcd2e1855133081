"""The hostile suite through ``codeloop mcp``: every case as a ``run_python`` call.

The cases and checks are those of ``test_hostile.py``, imported and run
again here against one more target: the MCP server over streamable HTTP,
served in this process (so the host secret the suite sets is in the server's
own environment, as it would be for a real server), reached by the MCP SDK's
client on every call. :class:`McpClientExecutor` turns each tool result back
into an ``ExecutionResult`` so the suite's checks read it unchanged.

The server's limits are the suite's ``LIMITS``; only the deadline travels per
call (``timeout_s``), as an MCP client can ask for nothing else. For the
memory bomb, whose own cap is smaller, the server's 1 GiB cap is what it hits.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import pytest_asyncio
from mcp_types import EmbeddedResource, ImageContent, TextContent
from test_hostile import (  # noqa: F401  (fixtures and tests run again against the MCP target)
    LIMITS,
    host,
    test_hostile,
    test_nothing_left_behind_and_next_execution_works,
    used_tokens,
)

from executors import Artifact, ExecutionResult, Limits, Outcome
from executors.pool import PoolExecutor

pytest.importorskip("mcp")

from mcp import Client

from orchestrator.mcp_server import (
    HttpSettings,
    SandboxTools,
    ToolSettings,
    build_http_app,
    build_server,
    serve_http,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class McpTarget:
    """The shape of ``conftest.Target``, which the imported tests read."""

    label: str
    executor: McpClientExecutor
    guarantees: frozenset[str]
    restricted: bool = False
    work_root: Path | None = None


class McpClientExecutor:
    """An executor whose every run is a ``run_python`` call to an MCP server."""

    name = "mcp"
    stateful = False

    def __init__(self, url: str) -> None:
        self.url = url

    async def execute(self, code: str, *, files=(), limits: Limits | None = None, session=None) -> ExecutionResult:
        arguments = {"code": code, "timeout_s": (limits or LIMITS).timeout_s}
        async with Client(self.url) as client:  # a connection per call, as a client may well do
            result = await client.call_tool("run_python", arguments)
        if result.is_error:
            text = " ".join(b.text for b in result.content if isinstance(b, TextContent))
            return ExecutionResult(outcome=Outcome.SANDBOX_ERROR, error_type="ToolError", error_message=text)
        return as_execution_result(result)

    async def reset(self, session=None) -> None:
        return None

    async def aclose(self) -> None:
        return None


def as_execution_result(result) -> ExecutionResult:
    data = result.structured_content
    payloads: dict[str, bytes] = {}
    for block in result.content:
        if isinstance(block, ImageContent):
            payloads[block.meta["name"]] = base64.b64decode(block.data)
        elif isinstance(block, EmbeddedResource):
            name = unquote(block.resource.uri.split("/", 4)[4])
            resource = block.resource
            payloads[name] = resource.text.encode() if hasattr(resource, "text") else base64.b64decode(resource.blob)
    artifacts = [
        Artifact(name=f["name"], data=payloads.get(f["name"], b""), mime_type=f["mime_type"], truncated=f["truncated"])
        for f in data["files"]
    ]
    error = data["error"] or {}
    return ExecutionResult(
        outcome=Outcome(data["outcome"]),
        stdout=data["stdout"],
        stderr=data["stderr"],
        error_type=error.get("type"),
        error_message=error.get("message"),
        traceback=error.get("traceback"),
        exit_code=data["exit_code"],
        duration_s=data["duration_s"],
        artifacts=artifacts,
        stdout_truncated=data["stdout_truncated"],
        stderr_truncated=data["stderr_truncated"],
        executor=data["executor"],
        isolation=data["isolation"],
        results=data["results"],
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target():
    pool = PoolExecutor()
    await pool.start()
    settings = ToolSettings(limits=LIMITS, max_timeout_s=30)
    tools = SandboxTools(pool, settings)
    http = HttpSettings(port=0)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    app = build_http_app(build_server(tools), http, token=None)
    serving = asyncio.create_task(serve_http(app, http, on_ready=ready.set_result))
    url = await asyncio.wait_for(ready, 30)
    yield McpTarget("mcp-pool", McpClientExecutor(url), pool.isolator.guarantees)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await tools.aclose()
