"""``codeloop mcp``: serve the sandbox as an MCP server over stdio or streamable HTTP."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from executors import Executor, Limits, UnknownExecutorError, available_executors, get_executor

from . import EXIT_OK, UsageError, _version

TOKEN_ENV = "CODELOOP_MCP_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve the sandbox as an MCP server (run_python, sessions, files)",
        description="Serve run_python, reset_session, list_files and read_file to MCP clients.",
    )
    p.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default: launched by the client) or streamable HTTP",
    )
    p.add_argument("--host", default="127.0.0.1", help="HTTP: address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="HTTP: port (default 8765; 0 picks a free one)")
    p.add_argument("--path", default="/mcp", help="HTTP: endpoint path (default /mcp)")
    p.add_argument("--token", help=f"HTTP: require this bearer token (prefer ${TOKEN_ENV}: flags show in ps)")
    p.add_argument("--max-body-kb", type=int, default=4096, help="HTTP: largest request body, else 413 (default 4096)")
    p.add_argument(
        "--max-concurrent", type=int, default=8, help="HTTP: requests in flight at once, else 429 (default 8)"
    )
    p.add_argument(
        "--executor",
        default="pool",
        help=f"where calls without a session run: {', '.join(available_executors())} (default pool)",
    )
    p.add_argument(
        "--session-executor",
        default="jupyter",
        help="kernel-backed executor for sessions: jupyter (default) or none to turn sessions off",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="default deadline of a call, seconds (default 30)")
    p.add_argument("--max-timeout", type=float, default=120.0, help="largest timeout_s a call may ask (default 120)")
    p.add_argument("--memory-mb", type=int, default=2048, help="memory limit per run or kernel (default 2048)")
    p.add_argument("--max-sessions", type=int, default=4, help="live sessions at once (default 4)")
    p.add_argument(
        "--session-idle", type=float, default=600.0, help="seconds before an unused session is ended (default 600)"
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        from ..mcp_server import HttpSettings, SandboxTools, SessionSettings, ToolSettings
    except ImportError as exc:
        raise UsageError(f"codeloop mcp needs the mcp extra (pip install 'codeloop[mcp]'): {exc}") from exc

    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        limits = Limits(timeout_s=args.timeout, memory_bytes=args.memory_mb * 1024**2)
        settings = ToolSettings(
            limits=limits,
            max_timeout_s=args.max_timeout,
            sessions=SessionSettings(max_sessions=args.max_sessions, idle_timeout_s=args.session_idle),
        )
        http = HttpSettings(
            host=args.host,
            port=args.port,
            path=args.path,
            max_body_bytes=args.max_body_kb * 1024,
            max_concurrent_requests=args.max_concurrent,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.timeout <= 0 or args.memory_mb <= 0:
        raise UsageError("--timeout and --memory-mb must be positive")
    if args.transport == "stdio" and args.token:
        raise UsageError("--token applies to --transport http only")
    if args.transport == "http" and not http.loopback and not token:
        raise UsageError(
            f"binding {args.host} would let anyone who reaches it run code; set a token with ${TOKEN_ENV} or --token"
        )
    executor = _build_executor(args.executor)
    session_executor, why_not = _build_session_executor(args.session_executor, settings)
    tools = SandboxTools(executor, settings, session_executor=session_executor, sessions_unavailable=why_not)
    asyncio.run(_serve(args.transport, tools, http, token))
    return EXIT_OK


def _build_executor(name: str) -> Executor:
    try:
        return get_executor(name)
    except (UnknownExecutorError, ValueError, ImportError) as exc:
        raise UsageError(f"--executor: {exc}") from exc


def _build_session_executor(name: str, settings) -> tuple[Executor | None, str]:
    if name == "none":
        return None, "the server was started with --session-executor none"
    if name != "jupyter":
        raise UsageError(f"--session-executor must be jupyter or none, got {name!r}")
    try:
        from executors.jupyter import JupyterExecutor
    except ImportError as exc:
        return None, f"the jupyter extra is not installed (pip install 'codeloop[jupyter]'): {exc}"
    sessions = settings.sessions
    executor = JupyterExecutor(
        limits=settings.limits, max_kernels=sessions.max_sessions, idle_timeout_s=sessions.idle_timeout_s
    )
    return executor, ""


async def _serve(transport: str, tools, http, token: str | None) -> None:
    """Serve until the client goes (stdio), or SIGTERM/SIGHUP; then stop the executors cleanly."""
    from ..mcp_server import build_http_app, build_server, serve_http

    server = build_server(tools, version=_version())
    # Warm the pool while the client connects; a first call waits for it (the pool's own start lock).
    warming = asyncio.create_task(tools.start())
    warming.add_done_callback(_report_warm_failure)
    if transport == "stdio":
        serving = asyncio.create_task(server.run_stdio_async())
    else:
        app = build_http_app(server, http, token=token)
        auth = "bearer token required" if token else "no token"
        serving = asyncio.create_task(
            serve_http(
                app,
                http,
                on_ready=lambda url: print(f"codeloop mcp: serving on {url} ({auth})", file=sys.stderr, flush=True),
            )
        )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, serving.cancel)
    try:
        await serving
    except asyncio.CancelledError:
        pass  # a signal or Ctrl-C: the normal way to stop; clean up below
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        warming.cancel()
        await tools.aclose()


def _report_warm_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"codeloop mcp: the executor could not be warmed: {task.exception()}", file=sys.stderr, flush=True)
