"""``sandbox`` (the default): one isolated child process per execution.

The child runs the shared harness inside the strongest isolation the machine
offers (bubblewrap, else ``unshare``, else rlimits only; see
:mod:`executors.isolation`) and applies its own resource limits: CPU seconds,
address space, file size, open files and a process count. It sees an
environment built from a short allow list, never the caller's; input files
are mounted read-only; whatever it writes in its working directory comes
back as artifacts, and open matplotlib figures come back as PNG files.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .base import ExecutionResult, InputFile, Isolation, Limits, Outcome
from .interpret import interpret
from .isolation import SANDBOX_ROOT, SANDBOX_WORK, Isolator, IsolationUnavailable, Mount, SandboxCommand
from .process import ProcessOutcome, run_process
from .workspace import Workspace

HARNESS = str(Path(__file__).with_name("harness.py"))


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment the child sees: an allow list, nothing inherited."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "random",
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class SandboxExecutor:
    """A fresh, isolated interpreter per execution.

    ``isolation`` forces a level (``"bwrap"``, ``"unshare"``, ``"rlimits"``)
    or takes a ready :class:`Isolator`; by default the strongest available
    is detected on first use. ``strict`` refuses to run (SANDBOX_ERROR)
    without a real boundary.
    """

    name = "sandbox"
    stateful = False

    def __init__(
        self,
        limits: Limits | None = None,
        strict: bool = False,
        max_concurrency: int = 4,
        isolation: Isolator | Isolation | str | None = None,
        python: str | None = None,
    ) -> None:
        self.limits = limits or Limits()
        if isinstance(isolation, Isolator):
            self.isolator = isolation
        else:
            kwargs = {"python": python} if python else {}
            self.isolator = Isolator(level_request=isolation, strict=strict, **kwargs)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._detect_lock = asyncio.Lock()
        self._level: Isolation | None = None
        self._mpl_seed: Path | None = None  # a font cache built once, copied into each run
        self._mpl_lock = asyncio.Lock()

    @property
    def isolation(self) -> str:
        """The isolation level in use (detected on first access)."""
        return self.isolator.level.value

    async def level(self) -> Isolation:
        """Detect the isolation level once, off the event loop."""
        if self._level is None:
            async with self._detect_lock:
                if self._level is None:
                    self._level = await asyncio.to_thread(lambda: self.isolator.level)
        return self._level

    async def execute(
        self,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        limits: Limits | None = None,
        session: str | None = None,
    ) -> ExecutionResult:
        limits = limits or self.limits
        try:
            level = await self.level()
        except IsolationUnavailable as exc:
            return ExecutionResult(
                outcome=Outcome.SANDBOX_ERROR,
                error_type="SandboxError",
                error_message=str(exc),
                executor=self.name,
                isolation=(self.isolator.level_request or Isolation.NONE).value,
            )
        if "matplotlib" in code or "plt." in code:
            await self._seed_matplotlib()
        async with self._slots:
            with Workspace(prefix="codeloop-sandbox-") as ws:
                try:
                    ws.add_inputs(files)
                except ValueError as exc:
                    return ExecutionResult(
                        outcome=Outcome.SANDBOX_ERROR, error_type="ValueError", error_message=str(exc),
                        executor=self.name, isolation=level.value,
                    )
                ws.write_code(code)
                cmd = self._command(ws, files, limits)
                proc = await run_process(
                    cmd.argv,
                    cwd=cmd.cwd,
                    env=cmd.env,
                    timeout_s=limits.timeout_s,
                    keep_bytes=limits.output_bytes,
                    hard_bytes=limits.output_hard_bytes,
                )
                artifacts = ws.collect_artifacts(limits)
        if level is Isolation.BWRAP:
            signal_from_bwrap_status(proc)
        return with_reported_usage(
            interpret(proc, limits=limits, executor=self.name, isolation=level.value, artifacts=artifacts), proc.report
        )

    def _command(self, ws: Workspace, files: Sequence[InputFile], limits: Limits) -> SandboxCommand:
        mpl = ws.root / "mpl"
        mpl.mkdir()
        if self._mpl_seed is not None:
            for cache in self._mpl_seed.glob("fontlist-*.json"):
                shutil.copyfile(cache, mpl / cache.name)
        for directory in (ws.root, ws.work, mpl):
            self.isolator.prepare(directory)
        mounts = [
            Mount(str(ws.code_path), f"{SANDBOX_ROOT}/main.py"),
            Mount(HARNESS, f"{SANDBOX_ROOT}/harness.py"),
            Mount(str(mpl), f"{SANDBOX_ROOT}/mpl", writable=True),
        ]
        # Input files stay read-only even for their owner: each is mounted over its own copy.
        for f in files:
            name = Path(f.name).name
            mounts.append(Mount(str(ws.work / name), f"{SANDBOX_WORK}/{name}"))
        view = self.isolator.view(ws.work, mounts)
        config = {
            "code_path": view.inside(ws.code_path),
            "workdir": view.work_dir,
            "result_fd": "{REPORT_FD}",
            "limits": limits.to_json(),
            "reseed": False,
        }
        env = {**sandbox_env(home=view.work_dir), "MPLCONFIGDIR": view.inside(mpl)}
        argv = [self.isolator.python, "-u", "-X", "utf8", "-s", view.inside(HARNESS), json.dumps(config)]
        return self.isolator.wrap(argv, work_dir=ws.work, mounts=mounts, env=env)

    async def _seed_matplotlib(self) -> None:
        """Build matplotlib's font cache once, in a run with no user code, for later runs to copy."""
        if self._mpl_seed is not None:
            return
        async with self._mpl_lock:
            if self._mpl_seed is not None:
                return
            seed = Path(tempfile.mkdtemp(prefix="codeloop-mpl-seed-"))
            self.isolator.prepare(seed)
            mounts = [Mount(str(seed), f"{SANDBOX_ROOT}/mpl", writable=True)]
            view = self.isolator.view(seed, mounts)
            cmd = self.isolator.wrap(
                [self.isolator.python, "-s", "-c", "import matplotlib.font_manager"],
                work_dir=seed,
                mounts=mounts,
                env={**sandbox_env(home="/tmp"), "MPLCONFIGDIR": view.inside(seed)},
            )
            proc = await run_process(
                cmd.argv, cwd=cmd.cwd, env=cmd.env, timeout_s=60, keep_bytes=4096, hard_bytes=65536, with_report_fd=False
            )
            if proc.returncode == 0 and any(seed.glob("fontlist-*.json")):
                self._mpl_seed = seed
            else:
                shutil.rmtree(seed, ignore_errors=True)

    async def reset(self, session: str | None = None) -> None:
        return None

    async def aclose(self) -> None:
        if self._mpl_seed is not None:
            shutil.rmtree(self._mpl_seed, ignore_errors=True)
            self._mpl_seed = None


def with_reported_usage(result: ExecutionResult, report: bytes) -> ExecutionResult:
    """Take the larger of the kernel's and the harness's resource figures.

    Under bwrap the interpreter is reaped by the namespace's PID-1 reaper,
    which exits without being waited for, so our ``wait4`` sees only bwrap
    itself. The harness measures its own usage (and its children's) with
    ``getrusage`` just before it reports; when the child is killed before
    reporting, only the kernel's figures remain.
    """
    try:
        usage = json.loads(report) if report else {}
    except ValueError:
        return result
    if not isinstance(usage, dict):
        return result
    cpu, peak = usage.get("cpu_time_s"), usage.get("peak_memory_bytes")
    if isinstance(cpu, (int, float)):
        result.cpu_time_s = max(result.cpu_time_s or 0.0, float(cpu))
    if isinstance(peak, int):
        result.peak_memory_bytes = max(result.peak_memory_bytes or 0, peak)
    return result


def signal_from_bwrap_status(proc: ProcessOutcome) -> None:
    """bwrap exits with 128 + N when the child died of signal N; report the signal.

    Only when the harness wrote no report saying it chose that exit status:
    ``os._exit(139)`` without a report is indistinguishable from SIGSEGV.
    """
    if proc.signal is not None or proc.returncode is None or not 128 < proc.returncode < 128 + 65:
        return
    try:
        report = json.loads(proc.report) if proc.report else None
    except ValueError:
        report = None
    if isinstance(report, dict) and report.get("exit_code") == proc.returncode:
        return
    proc.signal = proc.returncode - 128
    proc.returncode = None
