"""The tools as an MCP server (the official SDK's ``MCPServer``), for any transport."""

# No ``from __future__ import annotations``: the SDK evaluates the tool signatures, and
# their descriptions name this function's locals.

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from .inputs import FileArg, ToolArgumentError
from .sessions import SessionError
from .tools import SandboxTools

SERVER_NAME = "codeloop"

INSTRUCTIONS = (
    "Runs Python in a sandbox (no network, no host files, limited time, memory and output). "
    "numpy, pandas, matplotlib and sympy are available. Without a session every run_python call is a fresh "
    "process; pass a session name to keep variables and files between calls (reset_session ends it). "
    "Figures come back as images, files the code wrote as embedded resources."
)

SessionArg = Annotated[str, Field(description="session name: 1-64 letters, digits, '_', '.' or '-'")]


def build_server(tools: SandboxTools, *, version: str = "") -> MCPServer:
    server: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, version=version, log_level="WARNING")
    limit = tools.settings.max_timeout_s
    default = tools.settings.limits.timeout_s

    @server.tool(
        description=(
            "Run Python code and return stdout, stderr, the outcome (OK, FAILED, DEADLINE_EXCEEDED, "
            "MEMORY_EXCEEDED, OUTPUT_LIMIT, KILLED, SANDBOX_ERROR) and any error; matplotlib figures come back "
            "as images and files the code wrote as embedded resources."
        ),
        annotations=ToolAnnotations(title="Run Python", read_only_hint=False, open_world_hint=False),
    )
    async def run_python(
        code: Annotated[str, Field(description="the Python source to run")],
        files: Annotated[
            list[FileArg] | None, Field(description="input files placed in the working directory first")
        ] = None,
        session: Annotated[
            str | None, Field(description="keep state between calls under this name; omit for a fresh process")
        ] = None,
        timeout_s: Annotated[
            float | None, Field(description=f"wall-clock deadline in seconds (default {default:g}, at most {limit:g})")
        ] = None,
    ) -> CallToolResult:
        return await _guarded(tools.run_python(code, files=files, session=session, timeout_s=timeout_s))

    @server.tool(description="End a session: its variables and files are gone; the next call with it starts afresh.")
    async def reset_session(session: SessionArg) -> CallToolResult:
        return await _guarded(tools.reset_session(session))

    @server.tool(
        description="List the files in a session's working directory (inputs and files the code wrote), with sizes.",
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def list_files(session: SessionArg) -> CallToolResult:
        return await _guarded(tools.list_files(session))

    @server.tool(
        description="Read one file from a session's working directory: images as image content, others as a resource.",
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def read_file(
        session: SessionArg,
        name: Annotated[str, Field(description="path relative to the working directory, e.g. out.csv")],
    ) -> CallToolResult:
        return await _guarded(tools.read_file(session, name))

    return server


async def _guarded(call) -> CallToolResult:
    """Our argument and session errors become MCP tool errors with their message."""
    try:
        return await call
    except (ToolArgumentError, SessionError) as exc:
        raise ToolError(str(exc)) from None
