"""``codeloop mcp``: the sandbox as an MCP server (stdio or streamable HTTP).

Named ``mcp_server`` so it does not shadow the ``mcp`` SDK it is built on.

    tools = SandboxTools(PoolExecutor(), ToolSettings(), session_executor=JupyterExecutor(...))
    server = build_server(tools)
    await server.run_stdio_async()                                       # stdio
    await serve_http(build_http_app(server, HttpSettings(), token=None), HttpSettings())  # HTTP
"""

from .http import build_http_app, serve_http
from .inputs import FileArg, ToolArgumentError
from .server import build_server
from .sessions import SessionError
from .settings import HttpSettings, SessionSettings, ToolSettings
from .tools import SandboxTools

__all__ = [
    "FileArg",
    "HttpSettings",
    "SandboxTools",
    "SessionError",
    "SessionSettings",
    "ToolArgumentError",
    "ToolSettings",
    "build_http_app",
    "build_server",
    "serve_http",
]
