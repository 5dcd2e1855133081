"""The four tools, independent of any transport.

``run_python`` without a session runs on the stateless executor (the warm
pool by default): a fresh process each call. With a session it runs in that
session's kernel, where variables and files persist until ``reset_session``
or the idle timeout. Bad arguments raise :class:`ToolArgumentError` or
:class:`SessionError`; the MCP layer reports both as tool errors.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from mcp_types import CallToolResult, TextContent

from executors import Artifact, ExecutionResult, Executor, InputFile, Limits

from .inputs import FileArg, ToolArgumentError, check_session, check_timeout, decode_files
from .results import artifact_content, execution_to_tool_result, file_uri
from .sessions import SessionError, SessionRegistry
from .settings import ToolSettings
from .workdir import WorkdirError, list_workdir, read_workdir_file


class SandboxTools:
    def __init__(
        self,
        executor: Executor,
        settings: ToolSettings,
        *,
        session_executor: Executor | None = None,
        sessions_unavailable: str = "",
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.sessions = SessionRegistry(session_executor, settings.sessions) if session_executor else None
        # Why sessions are off, told to a client that asks for one.
        self.sessions_unavailable = sessions_unavailable or "this server runs without sessions"

    async def run_python(
        self,
        code: str,
        files: Sequence[FileArg] | None = None,
        session: str | None = None,
        timeout_s: float | None = None,
    ) -> CallToolResult:
        if not code.strip():
            raise ToolArgumentError("code is empty")
        inputs = decode_files(files, self.settings)
        limits = self.settings.limits.replace(timeout_s=check_timeout(timeout_s, self.settings))
        if session is None:
            run_id = uuid.uuid4().hex[:12]
            result = await self._run_stateless(code, inputs, limits, run_id)
            return execution_to_tool_result(result, session=None, scope=f"runs/{run_id}")
        registry = self._registry()
        result, notice = await registry.run(check_session(session), code, files=inputs, limits=limits)
        return execution_to_tool_result(result, session=session, scope=f"sessions/{session}", notice=notice)

    async def _run_stateless(self, code: str, inputs: list[InputFile], limits: Limits, run_id: str) -> ExecutionResult:
        if not self.executor.stateful:
            return await self.executor.execute(code, files=inputs, limits=limits)
        # A stateful executor keeps a kernel per session: a one-off session, ended at once.
        one_off = f"mcp-run-{run_id}"
        try:
            return await self.executor.execute(code, files=inputs, limits=limits, session=one_off)
        finally:
            await self.executor.reset(one_off)

    async def reset_session(self, session: str) -> CallToolResult:
        existed = await self._registry().reset(check_session(session))
        text = f"session {session!r} was reset" if existed else f"session {session!r} had no live state"
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content={"session": session, "reset": existed},
        )

    async def list_files(self, session: str) -> CallToolResult:
        root = self._registry().work_dir(check_session(session))
        entries = list_workdir(root)
        lines = [f"{e.name}\t{e.size}" for e in entries] or ["(no files)"]
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(lines))],
            structured_content={"session": session, "files": [{"name": e.name, "size": e.size} for e in entries]},
        )

    async def read_file(self, session: str, name: str) -> CallToolResult:
        root = self._registry().work_dir(check_session(session))
        if not name:
            raise ToolArgumentError("name is empty")
        try:
            data = read_workdir_file(root, name, self.settings.max_read_bytes)
        except WorkdirError as exc:
            raise ToolArgumentError(str(exc)) from None
        artifact = Artifact.of(name, data)
        block = artifact_content(artifact, f"sessions/{session}")
        assert block is not None  # only a truncated artifact has no content
        return CallToolResult(
            content=[block],
            structured_content={
                "session": session,
                "name": name,
                "mime_type": artifact.mime_type,
                "size": artifact.size,
                "uri": file_uri(f"sessions/{session}", name),
            },
        )

    def _registry(self) -> SessionRegistry:
        if self.sessions is None:
            raise SessionError(f"sessions are not available: {self.sessions_unavailable}")
        return self.sessions

    async def start(self) -> None:
        """Warm the stateless executor now (the pool starts its zygotes), not on the first call."""
        start = getattr(self.executor, "start", None)
        if start is not None:
            await start()

    async def aclose(self) -> None:
        """Stop both executors at once: a stdio client waits only 2 s before it sends SIGTERM."""
        executors = [self.executor] + ([self.sessions.executor] if self.sessions is not None else [])
        results = await asyncio.gather(*(e.aclose() for e in executors), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
