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
import os
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

from ._shared import HARNESS, INSIDE, build_font_cache, detect_isolation, mentions_matplotlib, sandbox_env, uid_block
from .base import BaseExecutor, ExecutionResult, InputFile, Isolation, Limits
from .inside.harness import decode_report
from .interpret import interpret
from .isolation import SANDBOX_ROOT, SANDBOX_WORK, IsolationUnavailable, Isolator, Mount, SandboxCommand
from .process import ProcessOutcome, run_process
from .workspace import Workspace

PRIVATE_MPL_DIR = "/tmp/matplotlib"  # in the child's private /tmp (bwrap and unshare levels)


# Started with -S: install the precomputed sys.path and the builtins site adds (exit, quit,
# help, copyright: model-written code calls exit()), then run the harness as __main__.
BOOT = (
    "import sys, site\n"
    "site.setquit(); site.setcopyright(); site.sethelper()\n"
    "sys.path[:] = SYS_PATH\n"
    "sys.argv = sys.argv[1:]\n"
    "exec(compile(open(sys.argv[0], encoding='utf-8').read(), sys.argv[0], 'exec'),"
    " {'__name__': '__main__', '__file__': sys.argv[0], '__builtins__': __builtins__})\n"
)


def interpreter_sys_path(python: str) -> list[str] | None:
    """The interpreter's import path after ``site`` ran (absolute directories only), or None."""
    try:
        done = subprocess.run(
            [python, "-s", "-c", "import sys, json; print(json.dumps(sys.path))"],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        paths = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if done.returncode != 0 or not isinstance(paths, list):
        return None
    return [p for p in paths if isinstance(p, str) and os.path.isabs(p) and os.path.isdir(p)]


class SandboxExecutor(BaseExecutor):
    """A fresh, isolated interpreter per execution.

    ``isolation`` forces a level (``"bwrap"``, ``"unshare"``, ``"rlimits"``)
    or takes a ready :class:`Isolator`; by default the strongest available
    is detected by ``start()`` or the first run. ``strict`` refuses to run
    (SANDBOX_ERROR) without a real boundary. ``max_concurrency`` bounds
    simultaneous children; ``work_root`` is where per-execution workspaces
    are made (the temp dir by default); they are removed in the background
    after each run (``drain()`` waits for that, ``aclose()`` does too).
    """

    name = "sandbox"

    def __init__(
        self,
        limits: Limits | None = None,
        strict: bool = False,
        max_concurrency: int = 4,
        isolation: Isolator | Isolation | str | None = None,
        python: str | None = None,
        work_root: str | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"SandboxExecutor: max_concurrency must be at least 1, got {max_concurrency}")
        super().__init__(limits)
        self.work_root = work_root  # parent of the per-execution workspaces (default: the temp dir)
        if isinstance(isolation, Isolator):
            self.isolator = isolation
        else:
            self.isolator = (
                Isolator(level_request=isolation, strict=strict, python=python)
                if python
                else Isolator(level_request=isolation, strict=strict)
            )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._free_uids = uid_block(max_concurrency)  # one user id per running child (when we drop root)
        self._mpl_seed: Path | None = None  # a font cache built once, copied into each run
        self._mpl_lock = asyncio.Lock()
        self._cleanups: set[asyncio.Future] = set()
        self._sys_path: list[str] | None = None  # the interpreter's sys.path after site, found once
        self._sys_path_found = False

    @property
    def python(self) -> str:
        """The interpreter the code runs in (probed for its importable modules)."""
        return self.isolator.python

    @property
    def isolation(self) -> Isolation | None:
        """The level runs get, once detected (``start()`` or the first run); never probes."""
        return self.isolator.detected

    async def level(self) -> Isolation:
        """Detect the isolation level once, off the event loop (raises IsolationUnavailable)."""
        level = await detect_isolation(self.isolator)
        if not self._sys_path_found:
            self._sys_path = await asyncio.to_thread(interpreter_sys_path, self.isolator.python)
            self._sys_path_found = True
        return level

    async def start(self) -> None:
        await self.level()

    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        try:
            level = await self.level()
        except IsolationUnavailable as exc:
            return self.error_result(str(exc), isolation=self.isolator.level_request or Isolation.NONE)
        plots = mentions_matplotlib(code)
        if plots:
            await self._seed_matplotlib()
        async with self._slots:
            uid = self._free_uids.pop()
            ws = Workspace(prefix="codeloop-sandbox-", base_dir=self.work_root)
            try:
                try:
                    ws.add_inputs(files)
                except ValueError as exc:
                    return self.error_result(str(exc), error_type="ValueError")
                ws.write_code(code)
                # A font-cache dir costs a mkdir and an rmdir; only plotting code (or a level without
                # a private /tmp, where the cache must not land in the host's /tmp) gets one.
                cmd = self._command(ws, files, limits, mpl_dir=plots or level is Isolation.RLIMITS, uid=uid)
                proc = await run_process(
                    cmd.argv,
                    cwd=cmd.cwd,
                    env=cmd.env,
                    timeout_s=limits.timeout_s,
                    keep_bytes=limits.output_bytes,
                    hard_bytes=limits.output_hard_bytes,
                )
                artifacts = ws.collect_artifacts(limits)
            finally:
                self._free_uids.append(uid)
                self._clean_up_later(ws)
        return self._result(proc, level, limits, artifacts)

    def _result(self, proc: ProcessOutcome, level: Isolation, limits: Limits, artifacts: list) -> ExecutionResult:
        if level is not Isolation.RLIMITS:
            signal_from_wrapper_status(proc)
        return with_reported_usage(
            interpret(proc, limits=limits, executor=self.name, isolation=level, artifacts=artifacts),
            proc.report,
            kernel_sees_child=level is Isolation.RLIMITS,  # else a wrapper may die before reaping it
        )

    def _command(
        self, ws: Workspace, files: Sequence[InputFile], limits: Limits, mpl_dir: bool, uid: int
    ) -> SandboxCommand:
        for directory in (ws.root, ws.work):
            self.isolator.prepare(directory, uid)
        mounts = [
            Mount(str(ws.code_path), f"{SANDBOX_ROOT}/main.py"),
            Mount(str(INSIDE), f"{SANDBOX_ROOT}/inside"),  # the harness and its init
        ]
        mpl = ws.root / "mpl"
        if mpl_dir:
            mpl.mkdir()
            if self._mpl_seed is not None:
                for cache in self._mpl_seed.glob("fontlist-*.json"):
                    shutil.copyfile(cache, mpl / cache.name)
            self.isolator.prepare(mpl, uid)
            mounts.append(Mount(str(mpl), f"{SANDBOX_ROOT}/mpl", writable=True))
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
            # No PID namespace at the rlimits level kills the code when its wrapper dies.
            "die_with_parent": self.isolator.detect() is Isolation.RLIMITS,
        }
        env = {**sandbox_env(home=view.work_dir), "MPLCONFIGDIR": view.inside(mpl) if mpl_dir else PRIVATE_MPL_DIR}
        argv = [self.isolator.python, "-u", "-X", "utf8", "-s"]
        if self._sys_path is not None:
            # Skip `site` (tens of ms: .pth hooks such as editable-install finders) and set the
            # path it would have produced; the mounts are read-only, so it cannot differ inside.
            argv += ["-S", "-c", BOOT.replace("SYS_PATH", json.dumps(self._sys_path))]
        argv += [view.inside(HARNESS), json.dumps(config)]
        return self.isolator.wrap(argv, work_dir=ws.work, mounts=mounts, env=env, uid=uid)

    async def _seed_matplotlib(self) -> None:
        """Build matplotlib's font cache once, in a run with no user code, for later runs to copy."""
        if self._mpl_seed is not None:
            return
        async with self._mpl_lock:
            if self._mpl_seed is not None:
                return
            seed = Path(tempfile.mkdtemp(prefix="codeloop-mpl-seed-"))
            if await build_font_cache(self.isolator, seed):
                self._mpl_seed = seed
                # Removed by aclose(); this covers an executor dropped without it.
                weakref.finalize(self, shutil.rmtree, str(seed), True)
            else:
                shutil.rmtree(seed, ignore_errors=True)

    def _clean_up_later(self, ws: Workspace) -> None:
        """Remove the workspace off the event loop: rmdir costs milliseconds on a journalled disk."""
        future = asyncio.get_running_loop().run_in_executor(None, ws.cleanup)
        self._cleanups.add(future)
        future.add_done_callback(self._cleanups.discard)

    async def drain(self) -> None:
        """Wait until every finished execution's workspace is gone."""
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        if self._mpl_seed is not None:
            shutil.rmtree(self._mpl_seed, ignore_errors=True)
            self._mpl_seed = None


def with_reported_usage(result: ExecutionResult, report: bytes, *, kernel_sees_child: bool) -> ExecutionResult:
    """Take the larger of the kernel's and the harness's resource figures.

    Under bwrap the interpreter is reaped by the namespace's PID-1 reaper,
    which exits without being waited for, so our ``wait4`` sees only bwrap
    itself; under unshare a killed run's wrapper may die before reaping it
    (``kernel_sees_child`` is False for both). The harness measures its own
    usage (and its children's) with ``getrusage`` just before it reports.
    A run killed before reporting then has no trustworthy figures: they are
    left unknown (None) rather than the wrapper's own few milliseconds.
    """
    usage = decode_report(report) or {}
    cpu, peak = usage.get("cpu_time_s"), usage.get("peak_memory_bytes")
    if isinstance(cpu, (int, float)):
        result.cpu_time_s = max(result.cpu_time_s or 0.0, float(cpu))
    elif not kernel_sees_child:
        result.cpu_time_s = None
    if isinstance(peak, int):
        result.peak_memory_bytes = max(result.peak_memory_bytes or 0, peak)
    elif not kernel_sees_child:
        result.peak_memory_bytes = None
    return result


def signal_from_wrapper_status(proc: ProcessOutcome) -> None:
    """bwrap, and the init at the ``unshare`` level (a namespace's first process cannot die
    of its own signal), exit with 128 + N when the code died of signal N; report the signal.

    Only when the harness wrote no report saying it chose that exit status:
    ``os._exit(139)`` without a report is indistinguishable from SIGSEGV.
    """
    if proc.signal is not None or proc.returncode is None or not 128 < proc.returncode < 128 + 65:
        return
    report = decode_report(proc.report)
    if report is not None and report.get("exit_code") == proc.returncode:
        return
    proc.signal = proc.returncode - 128
    proc.returncode = None
