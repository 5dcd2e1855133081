"""``jupyter``: a local IPython kernel per session, through ``jupyter_client``.

Each session gets its own kernel and its own temporary directory: ``work/``
is the kernel's working directory (inputs go in, files written there come
back as artifacts), ``home/`` is its HOME, and ``conn/`` holds the connection
file and the IPC sockets. The kernel talks over IPC sockets rather than TCP
ports, which avoids port races and keeps working inside a network namespace.

The kernel runs inside the same :class:`~executors.isolation.Isolator` as the
``sandbox`` executor (bubblewrap, else ``unshare``, else rlimits only), is
started through ``kernel_launch.py`` (memory, file-size and open-file
limits, then ``exec``), and sees an environment built from an allow list, so
the caller's secrets never reach it. Interrupts go over the control channel
(``interrupt_request``), because a sandboxed kernel sits in a session of its
own where a signal to our child's process group would not reach it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import psutil
from jupyter_client.manager import AsyncKernelManager

from ._shared import INSIDE, build_font_cache, detect_isolation, sandbox_env
from .base import Artifact, InputFile, Isolation, Limits
from .isolation import SANDBOX_ROOT, IsolationUnavailable, Isolator, Mount
from .kernel_common import DEFAULT_SESSION, KernelExecutorBase
from .kernel_messages import KernelDied, KernelHandle, KernelStartError
from .workspace import changed_files, safe_input_name, scan_dir

LAUNCHER = str(INSIDE / "kernel_launch.py")
INIT = str(INSIDE / "init.py")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

# ``python -m ipykernel_launcher``, plus: die with the parent. Set here, inside the
# sandbox, because dropping to the sandbox user clears an inherited setting and
# a PID namespace hides the parent from ipykernel's own parent poller (which,
# under the init at the unshare level, would take PID 1 for a dead parent).
KERNEL_MAIN = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "os.environ.pop('JPY_PARENT_PID', None)\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from ipykernel import kernelapp\n"
    "kernelapp.launch_new_instance()\n"
)


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
        self.log: Any = None  # the kernel process's stderr file

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
            raise KernelStartError(f"the jupyter kernel did not answer within {self.ready_timeout_s:g} s") from exc

    async def send_execute(self, code: str) -> str:
        if not await self.km.is_alive():
            raise KernelDied(self._death_detail())
        return self.client.execute(code, store_history=True, allow_stdin=False)

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
        try:
            await self.km.interrupt_kernel()
        except Exception as exc:  # jupyter_client raises plain RuntimeErrors for a dead kernel
            if not await self.km.is_alive():
                raise KernelDied(self._death_detail()) from exc
            raise KernelDied(f"the kernel could not be interrupted: {exc}") from exc

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
        victims = kernel_processes(self.km)  # before shutdown: bwrap's children outlive it briefly
        try:
            if self.km.has_kernel:
                await self.km.shutdown_kernel(now=True)
        finally:
            kill_local_kernel(self.km, self.root, self.log, victims)

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
        now = scan_dir(self.work)
        artifacts = changed_files(self.work, self._before, limits, current=now)
        self._before = now
        return artifacts


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


def kernel_processes(km: AsyncKernelManager) -> list[psutil.Process]:
    """The launcher and everything under it (bwrap, its init, the kernel, the code's children)."""
    proc = getattr(getattr(km, "provisioner", None), "process", None)
    if proc is None or proc.poll() is not None:
        return []
    try:
        top = psutil.Process(proc.pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_local_kernel(
    km: AsyncKernelManager, root: Path, log: Any = None, victims: Sequence[psutil.Process] = ()
) -> None:
    """Synchronous last resort: kill the kernel's whole process tree, then remove its files.

    The tree is waited for before the directory goes, or a dying kernel could
    still write into it. ``victims`` are processes seen before an earlier kill.
    """
    victims = [*victims, *kernel_processes(km)]
    proc = getattr(getattr(km, "provisioner", None), "process", None)
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # launched with start_new_session
        except OSError:
            pass
    for victim in victims:
        try:
            victim.kill()
        except psutil.Error:
            pass
    # A zombie has stopped writing; waiting for its reaping (by init) can take seconds.
    deadline = time.monotonic() + 2
    while any(_running(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc is not None:
        try:
            proc.wait(timeout=2)
        except Exception:
            pass
    if log is not None:
        log.close()
    shutil.rmtree(root, ignore_errors=True)


class JupyterExecutor(KernelExecutorBase):
    """Stateful: one local IPython kernel per session; variables persist between runs.

    ``isolation`` forces a level (``"bwrap"``, ``"unshare"``, ``"rlimits"``)
    or takes a ready :class:`Isolator`; by default the strongest available,
    as for the ``sandbox`` executor. ``strict`` refuses to run without a real
    boundary. A kernel's memory, file-size and open-file limits are those of
    the execution that started it (``limits`` by default) and last for its life.
    The other options (``limits``, ``max_kernels``, ``idle_timeout_s``,
    ``interrupt_grace_s``, ``startup_timeout_s``) are :class:`KernelExecutorBase`'s.
    """

    name = "jupyter"

    def __init__(
        self,
        *,
        isolation: Isolator | Isolation | str | None = None,
        strict: bool = False,
        extra_env: dict[str, str] | None = None,
        base_dir: str | None = None,
        **kernel_options: Any,
    ) -> None:
        super().__init__(**kernel_options)
        self.isolator = (
            isolation if isinstance(isolation, Isolator) else Isolator(level_request=isolation, strict=strict)
        )
        self.extra_env = dict(extra_env or {})
        self.base_dir = base_dir
        self._mpl_seed: Path | None = None
        self._mpl_lock = asyncio.Lock()

    @property
    def isolation(self) -> Isolation | None:
        """The level kernels run at, once detected (``start()`` or the first run); never probes."""
        return self.isolator.detected

    @property
    def python(self) -> str:
        """The interpreter the kernel runs (probed for its importable modules)."""
        return self.isolator.python

    async def level(self) -> Isolation:
        """Detect the isolation level once (it runs probe processes), off the event loop."""
        try:
            return await detect_isolation(self.isolator)
        except IsolationUnavailable as exc:
            raise KernelStartError(str(exc)) from exc

    async def start(self) -> None:
        await self.level()

    @staticmethod
    def kernel_limits(limits: Limits) -> str:
        return json.dumps(
            {"memory_bytes": limits.memory_bytes, "file_bytes": limits.file_bytes, "open_files": limits.open_files}
        )

    async def start_kernel(self, session: str, limits: Limits) -> KernelHandle:
        await self.level()
        # A short base path: IPC socket paths must fit in 107 bytes.
        root = Path(tempfile.mkdtemp(prefix="codeloop-jk-", dir=self.base_dir))
        work, home, conn = root / "work", root / "home", root / "conn"
        for d in (work, home, conn):
            d.mkdir()
        km = WrappedKernelManager(
            kernel_name="python3",
            transport="ipc",
            ip=str(conn / "k"),
            connection_file=str(conn / "kernel.json"),
        )
        handle = LocalKernel(km, root, ready_timeout_s=self.startup_timeout_s)
        self.register_cleanup(handle, lambda: kill_local_kernel(km, root, handle.log))
        try:
            km.write_connection_file()
            for path in (root, work, home, conn, conn / "kernel.json"):
                self.isolator.prepare(path)  # the kernel may run as another user
            # conn/ keeps its host path inside: the connection file names the sockets by it.
            mounts = [
                Mount(str(conn), str(conn), writable=True),
                Mount(str(home), f"{SANDBOX_ROOT}/home", writable=True),
                Mount(str(INSIDE), f"{SANDBOX_ROOT}/inside"),
            ]
            view = self.isolator.view(work, mounts)
            env = self._kernel_env(view.inside(home))
            # Under a minimal init: a kernel that is a PID namespace's first process would drop
            # the signals the code sends itself (os.kill(os.getpid(), signal.SIGSEGV)).
            python = self.isolator.python
            kernel = [python, "-s", view.inside(INIT), python, "-s", "-c", KERNEL_MAIN, "-f", str(conn / "kernel.json")]
            cmd = self.isolator.wrap(kernel, work_dir=work, mounts=mounts, env=env)
            # Limits are set before the sandbox starts and are inherited through it.
            full = [self.isolator.python, "-s", LAUNCHER, self.kernel_limits(limits), *cmd.argv]
            km.command_rewriter = lambda _spec_argv: list(full)
            spec = km.kernel_spec
            if spec is None:
                raise KernelStartError(f"no kernel spec named {km.kernel_name!r} is installed")
            spec.interrupt_mode = "message"
            await self._copy_font_cache(home / ".matplotlib")
            # The kernel's own stderr (not the code's: that goes over IOPub) goes to a log,
            # kept open for restarts, which launch with the same arguments.
            handle.log = open(root / "kernel.log", "wb")  # noqa: SIM115 - open across restarts; kill_local_kernel closes it
            await km.start_kernel(env=cmd.env, cwd=cmd.cwd, stdout=subprocess.DEVNULL, stderr=handle.log)
            await handle.attach()
            await handle.upload(())
        except BaseException as exc:
            tail = _log_tail(root / "kernel.log")
            await asyncio.shield(self._discard(handle))
            if isinstance(exc, asyncio.CancelledError):
                raise
            message = (
                str(exc) if isinstance(exc, KernelStartError) else f"the jupyter kernel could not be started: {exc}"
            )
            raise KernelStartError(message + (f"; the kernel's log ends with: {tail}" if tail else "")) from exc
        return handle

    def _kernel_env(self, inside_home: str) -> dict[str, str]:
        """The kernel's environment: the sandbox's, matplotlib drawing inline, its caches
        under the kernel's home (as seen from inside), then the executor's extra variables."""
        return {
            **sandbox_env(home=inside_home),
            "USER": "codeloop",
            "MPLBACKEND": INLINE_BACKEND,
            "MPLCONFIGDIR": f"{inside_home}/.matplotlib",
            "IPYTHONDIR": f"{inside_home}/.ipython",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **self.extra_env,
        }

    async def _copy_font_cache(self, target: Path) -> None:
        """Give a new kernel matplotlib's font cache, built once per executor.

        Without it each kernel's first plot rebuilds the cache (seconds), and
        fontconfig's complaints inside the sandbox would land in the code's stderr.
        """
        async with self._mpl_lock:
            if self._mpl_seed is None:
                self._mpl_seed = await self._build_font_cache()
        target.mkdir(exist_ok=True)
        for cache in self._mpl_seed.glob("fontlist-*.json"):
            shutil.copyfile(cache, target / cache.name)
        self.isolator.prepare(target)
        for f in target.iterdir():
            self.isolator.prepare(f)

    async def _build_font_cache(self) -> Path:
        seed = Path(tempfile.mkdtemp(prefix="codeloop-jk-mpl-", dir=self.base_dir))
        self._cleanups[id(seed)] = lambda: shutil.rmtree(seed, ignore_errors=True)
        # A missing cache only costs time later, so the outcome is not checked.
        await build_font_cache(self.isolator, seed)
        return seed

    async def _discard(self, handle: LocalKernel) -> None:
        try:
            await handle.shutdown()
        except Exception:
            kill_local_kernel(handle.km, handle.root, handle.log)
        self.forget_cleanup(handle)

    def kernel_pid(self, session: str | None = None) -> int | None:
        """The pid of a session's kernel launcher, or None without a live kernel."""
        sess = self._sessions.get(session or DEFAULT_SESSION)
        return cast(LocalKernel, sess.handle).pid if sess is not None else None  # this executor makes only these

    def work_dir(self, session: str | None = None) -> Path | None:
        """A live session's working directory (its inputs and the files its code wrote), or None."""
        sess = self._sessions.get(session or DEFAULT_SESSION)
        return cast(LocalKernel, sess.handle).work if sess is not None else None
