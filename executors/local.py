"""``local``: a fresh Python subprocess per execution. No isolation: trusted code only.

Each execution gets a temporary working directory with the input files copied
in, a wall-clock deadline that kills the whole process tree, and capped
stdout/stderr. The child inherits none of the caller's environment beyond a
short allow list, so API keys never reach it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

from ._shared import HARNESS, child_env
from .base import BaseExecutor, ExecutionResult, InputFile, Isolation, Limits
from .interpret import interpret
from .process import run_process
from .workspace import Workspace


class LocalExecutor(BaseExecutor):
    """Plain subprocess per run. Fast to set up, but the code can do anything you can."""

    name = "local"

    def __init__(self, limits: Limits | None = None, max_concurrency: int = 8, python: str | None = None) -> None:
        super().__init__(limits)
        self.python = python or sys.executable
        self._slots = asyncio.Semaphore(max_concurrency)

    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        async with self._slots:
            with Workspace(prefix="codeloop-local-") as ws:
                try:
                    ws.add_inputs(files)
                except ValueError as exc:  # a bad input file name: reported like the sandbox executor does
                    return self.error_result(str(exc), error_type="ValueError")
                ws.write_code(code)
                # Outside the code's cwd, so matplotlib's cache never comes back as artifacts.
                mpl = ws.root / "mpl"
                mpl.mkdir()
                config = {
                    "code_path": str(ws.code_path),
                    "result_fd": "{REPORT_FD}",
                    "limits": None,  # trusted code: only the deadline applies
                    "reseed": False,
                }
                proc = await run_process(
                    [self.python, "-u", "-X", "utf8", HARNESS, json.dumps(config)],
                    cwd=str(ws.work),
                    env=child_env(ws.work, {"MPLCONFIGDIR": str(mpl)}),
                    timeout_s=limits.timeout_s,
                    keep_bytes=limits.output_bytes,
                    hard_bytes=limits.output_hard_bytes,
                )
                artifacts = ws.collect_artifacts(limits)
        return interpret(proc, limits=limits, executor=self.name, isolation=Isolation.NONE, artifacts=artifacts)
