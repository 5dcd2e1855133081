"""``jupyter``: a local IPython kernel per session, through ``jupyter_client``.

Each session gets its own kernel and its own temporary directory: ``work/``
is the kernel's working directory (inputs go in, files written there come
back as artifacts), ``home/`` is its HOME, and ``conn/`` holds the connection
file and the IPC sockets. The kernel talks over IPC sockets rather than TCP
ports, which avoids port races and keeps working when the kernel runs in a
network namespace.

The kernel is started through ``kernel_launch.py`` (resource limits, then
``exec``) with an environment built from an allow list, so the caller's
secrets never reach it. When ``command_wrapper`` is given (for example the
sandbox's bwrap wrapper) the whole command runs inside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from .base import Artifact, InputFile, Isolation, Limits
from .kernel_common import (
    KernelDied,
    KernelExecutorBase,
    KernelHandle,
    KernelStartError,
    changed_files,
    safe_input_name,
    scan_dir,
)
from .local import child_env

LAUNCHER = str(Path(__file__).with_name("kernel_launch.py"))
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

# (argv, session_root) -> argv run instead; the root must stay visible at the same path.
CommandWrapper = Callable[[list[str], Path], list[str]]


class WrappedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command is rewritten before launch."""

    command_rewriter: Callable[[list[str]], list[str]] | None = None

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        return self.command_rewriter(cmd) if self.command_rewriter else cmd


class LocalKernel(KernelHandle):
    def __init__(self, km: WrappedKernelManager, root: Path, ready_timeout_s: float) -> None:
        self.km = km
        self.root = root
        self.work = root / "work"
        self.ready_timeout_s = ready_timeout_s
        self.client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._before: dict[str, tuple[int, int]] = {}
        self._uploaded: dict[str, str] = {}

    @property
    def pid(self) -> int | None:
        """The kernel's launcher process (the kernel itself, or its sandbox wrapper)."""
        proc = getattr(self.km.provisioner, "process", None)
        return proc.pid if proc is not None else None

    async def attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self.client is not None and self._client_loop is loop:
            return
        if self.client is not None:
            self.client.stop_channels()
        self.client = self.km.client()
        self.client.start_channels()
        self._client_loop = loop
        try:
            await self.client.wait_for_ready(timeout=self.ready_timeout_s)
        except RuntimeError as exc:  # raised when the kernel died during start-up
            raise KernelStartError(f"the jupyter kernel died while starting: {exc}") from exc
        except TimeoutError as exc:
            raise KernelStartError(
                f"the jupyter kernel did not answer within {self.ready_timeout_s:g} s"
            ) from exc

    async def send_execute(self, code: str, *, silent: bool = False) -> str:
        if not await self.km.is_alive():
            raise KernelDied(self._death_detail())
        return self.client.execute(code, silent=silent, store_history=not silent, allow_stdin=False)

    async def next_iopub(self, timeout: float) -> dict[str, Any] | None:
        # Wait in short slices so a killed kernel is noticed within ~0.2 s.
        try:
            return await self.client.get_iopub_msg(timeout=max(0.0, min(timeout, 0.2)))
        except queue.Empty:
            if not await self.km.is_alive():
                raise KernelDied(self._death_detail()) from None
            return None

    def _death_detail(self) -> str:
        proc = getattr(self.km.provisioner, "process", None)
        code = proc.poll() if proc is not None else None
        if code is not None and code < 0:
            try:
                return f"the kernel process was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"the kernel process was killed by signal {-code}"
        if code is not None:
            return f"the kernel process exited with status {code}"
        return "the kernel process is gone"

    async def interrupt(self) -> None:
        if await self.km.is_alive():
            await self.km.interrupt_kernel()

    async def restart(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
            self.client = None
        try:
            await self.km.restart_kernel(now=True)
        except Exception as exc:  # jupyter_client raises plain RuntimeErrors here
            raise KernelStartError(f"the jupyter kernel could not be restarted: {exc}") from exc
        self._uploaded.clear()
        await self.attach()

    async def shutdown(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
            self.client = None
        try:
            if self.km.has_kernel:
                await self.km.shutdown_kernel(now=True)
        finally:
            kill_local_kernel(self.km, self.root)

    async def upload(self, files: Sequence[InputFile]) -> None:
        for f in files:
            name = safe_input_name(f.name)
            digest = hashlib.sha256(f.data).hexdigest()
            target = self.work / name
            if self._uploaded.get(name) == digest and target.exists():
                continue
            target.unlink(missing_ok=True)
            target.write_bytes(f.data)
            self._uploaded[name] = digest
        self._before = scan_dir(self.work)

    async def collect_files(self, limits: Limits) -> list[Artifact]:
        artifacts = changed_files(self.work, self._before, limits)
        self._before = scan_dir(self.work)
        return artifacts


def kill_local_kernel(km: AsyncKernelManager, root: Path) -> None:
    """Synchronous last resort: kill the kernel's process group, remove its files."""
    proc = getattr(getattr(km, "provisioner", None), "process", None)
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # launched with start_new_session
        except OSError:
            pass
        try:
            proc.kill()
            proc.wait(timeout=2)
        except Exception:
            pass
    shutil.rmtree(root, ignore_errors=True)


class JupyterExecutor(KernelExecutorBase):
    """Stateful: one local IPython kernel per session; variables persist between runs.

    ``command_wrapper`` runs the kernel inside a sandbox (it receives the argv
    and the session directory, which must stay visible at the same path).
    Without one the kernel runs with resource limits and a cleared
    environment only: it can read what your user can read.
    """

    name = "jupyter"

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        max_kernels: int = 4,
        idle_timeout_s: float = 600.0,
        interrupt_grace_s: float = 2.0,
        startup_timeout_s: float = 60.0,
        python: str | None = None,
        command_wrapper: CommandWrapper | None = None,
        isolation: str | None = None,
        extra_env: dict[str, str] | None = None,
        base_dir: str | None = None,
    ) -> None:
        super().__init__(
            limits=limits,
            max_kernels=max_kernels,
            idle_timeout_s=idle_timeout_s,
            interrupt_grace_s=interrupt_grace_s,
            startup_timeout_s=startup_timeout_s,
        )
        self.python = python or sys.executable
        self.command_wrapper = command_wrapper
        self._isolation = isolation or (Isolation.KERNEL.value if command_wrapper else Isolation.RLIMITS.value)
        self.extra_env = dict(extra_env or {})
        self.base_dir = base_dir

    @property
    def isolation_level(self) -> str:
        return self._isolation

    def kernel_argv(self, root: Path) -> Callable[[list[str]], list[str]]:
        """How the kernel command is rewritten: our python, limits, then the wrapper."""
        kernel_limits = json.dumps(
            {
                "memory_bytes": self.limits.memory_bytes,
                "file_bytes": self.limits.file_bytes,
                "open_files": self.limits.open_files,
            }
        )

        # Plain values, not self: the kernel manager keeps this function, and the
        # finalizer keeps the kernel manager, so self here would never be collected.
        python, wrapper = self.python, self.command_wrapper

        def rewrite(cmd: list[str]) -> list[str]:
            # The spec's argv is [python, -m, ipykernel_launcher, -f, FILE]; keep its
            # arguments but run them with the configured interpreter.
            argv = [python, "-s", LAUNCHER, kernel_limits, python, *cmd[1:]]
            return wrapper(argv, root) if wrapper else argv

        return rewrite

    async def start_kernel(self, session: str) -> KernelHandle:
        # A short base path: IPC socket paths must fit in 107 bytes.
        root = Path(tempfile.mkdtemp(prefix="codeloop-jk-", dir=self.base_dir))
        for sub in ("work", "home", "conn"):
            (root / sub).mkdir()
        km = WrappedKernelManager(
            kernel_name="python3",
            transport="ipc",
            ip=str(root / "conn" / "k"),
            connection_file=str(root / "conn" / "kernel.json"),
        )
        km.command_rewriter = self.kernel_argv(root)
        env = child_env(
            root / "home",
            {
                "TMPDIR": str(root / "home"),
                "MPLBACKEND": INLINE_BACKEND,
                "MPLCONFIGDIR": str(root / "home" / ".matplotlib"),
                "IPYTHONDIR": str(root / "home" / ".ipython"),
                "JUPYTER_RUNTIME_DIR": str(root / "conn"),
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                **self.extra_env,
            },
        )
        handle = LocalKernel(km, root, ready_timeout_s=self.startup_timeout_s)
        self.register_cleanup(handle, lambda: kill_local_kernel(km, root))
        try:
            await km.start_kernel(env=env, cwd=str(root / "work"))
            await handle.attach()
            await handle.upload(())
        except BaseException as exc:
            await asyncio.shield(self._discard(handle))
            if isinstance(exc, (KernelStartError, asyncio.CancelledError)):
                raise
            raise KernelStartError(f"the jupyter kernel could not be started: {exc}") from exc
        return handle

    async def _discard(self, handle: LocalKernel) -> None:
        try:
            await handle.shutdown()
        except Exception:
            kill_local_kernel(handle.km, handle.root)
        self.forget_cleanup(handle)

    def kernel_pid(self, session: str | None = None) -> int | None:
        """The pid of a session's kernel launcher, or None without a live kernel."""
        sess = self._sessions.get(session or "default")
        return sess.handle.pid if sess is not None else None
