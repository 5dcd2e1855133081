"""The streamable HTTP transport: the SDK's app behind a bearer token and a concurrency cap.

Uvicorn serves it (the SDK's own choice for HTTP, and it brings it along).
From the outside in: the bearer token is checked first (401, before any body
is read), then POSTs in flight are counted (429 with Retry-After past the
cap), then the SDK's app caps the body (413) and guards against DNS rebinding
on a loopback host. The token is compared in constant time and never logged.
Each POST is answered with one JSON response rather than an SSE stream: a tool
result is one message, and some of ours carry megabytes of files, more than
SSE readers accept in one event by default (the SDK's client: 1 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable, Iterator

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import HttpSettings

UNAUTHORIZED = -32001  # JSON-RPC server error range: the request was not authenticated
OVERLOADED = -32002


def _error(status: int, code: int, message: str, headers: dict[str, str]) -> JSONResponse:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class BearerTokenMiddleware:
    """Every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the bearer token is empty")
        self.app = app
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = _error(401, UNAUTHORIZED, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credential = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token)


class ConcurrencyLimitMiddleware:
    """At most ``limit`` POSTs (tool calls and other requests) in flight; more get 429."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)  # GET streams idle; they are bounded by sessions
            return
        if self.in_flight >= self.limit:
            response = _error(
                429,
                OVERLOADED,
                f"too many requests in flight (limit {self.limit}); retry shortly",
                {"Retry-After": str(self.retry_after_s)},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def build_http_app(server: MCPServer, settings: HttpSettings, *, token: str | None) -> ASGIApp:
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.path,
        max_request_body_size=settings.max_body_bytes,
        max_sessions=settings.max_transport_sessions,
        session_idle_timeout=settings.transport_idle_timeout_s,
        host=settings.host,
        json_response=True,
    )
    app = ConcurrencyLimitMiddleware(app, settings.max_concurrent_requests)
    if token:
        app = BearerTokenMiddleware(app, token)
    return app


class _UvicornServer(uvicorn.Server):
    """Signals stay with the caller, who stops the server by cancelling ``serve_http``.

    Uvicorn's own handlers would re-raise SIGTERM after its shutdown and end the
    process before the executors' zygotes, kernels and directories are cleaned up.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: ASGIApp, settings: HttpSettings, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until cancelled; ``on_ready`` gets the URL once the socket listens (the real port for port 0)."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    server = _UvicornServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # start-up failed (e.g. the port is taken): raise its error
                raise OSError(f"the HTTP server on {settings.host}:{settings.port} stopped while starting")
            await asyncio.sleep(0.02)
        if on_ready is not None:
            port = server.servers[0].sockets[0].getsockname()[1]
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            on_ready(f"http://{host}:{port}{settings.path}")
        await task
    finally:
        if not task.done():
            server.should_exit = True
            await asyncio.wait({task}, timeout=5)
