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
from pathlib import Path

from .base import ExecutionResult, InputFile, Isolation, Limits, Outcome
from .interpret import interpret
from .process import run_process
from .workspace import Workspace

HARNESS = str(Path(__file__).parent / "inside" / "harness.py")


def child_env(workdir: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment a child sees: nothing inherited, nothing secret."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "random",
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if extra:
        env.update(extra)
    return env


class LocalExecutor:
    """Plain subprocess per run. Fast to set up, but the code can do anything you can."""

    name = "local"
    stateful = False
    isolation = Isolation.NONE

    def __init__(self, limits: Limits | None = None, max_concurrency: int = 8, python: str | None = None) -> None:
        self.limits = limits or Limits()
        self.python = python or sys.executable
        self._slots = asyncio.Semaphore(max_concurrency)

    async def execute(
        self,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        limits: Limits | None = None,
        session: str | None = None,
    ) -> ExecutionResult:
        limits = limits or self.limits
        async with self._slots:
            with Workspace(prefix="codeloop-local-") as ws:
                try:
                    ws.add_inputs(files)
                except ValueError as exc:  # a bad input file name: reported like the sandbox executor does
                    return ExecutionResult(
                        outcome=Outcome.SANDBOX_ERROR, error_type="ValueError", error_message=str(exc),
                        executor=self.name, isolation=self.isolation.value,
                    )
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
        return interpret(proc, limits=limits, executor=self.name, isolation=self.isolation.value, artifacts=artifacts)

    async def reset(self, session: str | None = None) -> None:
        return None

    async def aclose(self) -> None:
        return None
