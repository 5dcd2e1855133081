"""``pool``: pre-warmed fork servers inside the sandbox, one fork per execution.

A cold sandboxed Python pays for interpreter start-up and for importing numpy,
pandas and matplotlib on every run. The pool pays once: it starts ``size``
zygote processes (``zygote.py``) through the same isolation wrapper as the
``sandbox`` executor, each of which preloads the libraries and then forks one
child per execution. The orchestrator side (this module) owns each
execution's pipes, so stdout and stderr are captured per execution, capped,
and a flood is stopped; the zygote enforces the wall deadline and clears the
child's process tree, and this side keeps a backstop in case the zygote
itself stops answering.

Failure policy: if a zygote dies while running an execution (the code may
have killed it), that execution returns SANDBOX_ERROR and is not retried,
since re-running code that kills its zygote would only kill another one and
repeat its side effects; the zygote is replaced in the background. Zygotes are
also recycled after ``max_executions`` runs.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .base import ExecutionResult, InputFile, Isolation, Limits, Outcome
from .interpret import interpret
from .isolation import PRIVATE_TMP, IsolationUnavailable, Isolator, Mount, SandboxCommand, SandboxView
from .local import child_env
from .process import PipeCollector, ProcessOutcome, kill_tree
from .sandbox import UID_BLOCKS_SPAN, UID_BLOCKS_START
from .pool_workspace import SlotWorkspace
from .zygote import FAST_FORK_ENV, MAX_MESSAGE, decode, encode

HERE = Path(__file__).resolve().parent
ZYGOTE = str(HERE / "zygote.py")
HARNESS = str(HERE / "harness.py")
RESTRICTED_POLICY = str(HERE / "restricted_policy.py")

CONTROL_FD_MIN = 100
THP_SETTINGS = "/sys/kernel/mm/transparent_hugepage"
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # private to each zygote's sandbox at bwrap/unshare level
PRIVATE_MPL_DIR = "/tmp/.codeloop-matplotlib"
# ``from pkg.mod import ...`` (absolute only) or ``import a.b as c, d`` at a line start or after ``;``.
IMPORT_STATEMENT = re.compile(
    r"(?:^|;)[ \t]*(?:from[ \t]+([A-Za-z_][\w.]*)[ \t]+import\b|import[ \t]+([\w. \t,]+?)(?:[ \t]*(?:;|#|$)))",
    re.MULTILINE,
)
# Larger code goes through a file: a control message must stay well inside the socket buffer.
INLINE_CODE_CHARS = 16 * 1024
INLINE_CODE_BYTES = 64 * 1024
DEFAULT_PRELOAD = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot", "sympy")


@dataclass(frozen=True)
class PoolSettings:
    """How the pool is shaped. All of it is passed in; nothing is read from globals."""

    size: int = 2  # zygotes with the libraries preloaded, and so executions using them at once
    # Zygotes that preload nothing, for code that imports neither a preloaded library
    # nor anything outside the standard library: their forks cost a tenth as much.
    # Twice the cores: while one serves, the others prepare their next spare, so
    # back-to-back plain runs (a benchmark's) rarely wait for a fork (20% faster
    # on HumanEval 2 at a time than with 2). Each costs about 6 MiB (PSS).
    light_size: int = 4
    # Recycle a zygote after this many runs: each fork's copy-on-write splits some of
    # the zygote's huge pages, so forks slowly get dearer; a fresh zygote restores them.
    max_executions: int = 200
    warm: bool = True  # start every zygote on start(), and replace dead ones at once
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    restricted_policy: bool = True  # load RestrictedPython's policy so ``restricted`` runs here too
    start_timeout_s: float = 120.0
    backstop_s: float = 5.0  # how long past the deadline we wait for the zygote before killing it
    fast_fork: bool = True  # zygote heap via glibc malloc + huge pages: cheaper forks (see zygote.py)
    # Each spare runs a tiny workload while it waits, taking its copy-on-write faults
    # before the request instead of during it (see zygote.rehearse).
    rehearse: bool = True
    isolation: str = "auto"  # "auto", "bwrap", "unshare" or "rlimits"
    strict: bool = False  # refuse to run without a real boundary (bwrap or unshare)
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"PoolSettings.size must be at least 1, got {self.size}")
        if self.light_size < 0:
            raise ValueError(f"PoolSettings.light_size must be 0 or more, got {self.light_size}")
        if self.max_executions < 1:
            raise ValueError(f"PoolSettings.max_executions must be at least 1, got {self.max_executions}")


class ZygoteError(RuntimeError):
    """The zygote could not start or stopped answering."""


class ZygoteDied(ZygoteError):
    pass


def _kill_processes(pids: set[int]) -> None:
    """Finalizer: kill every zygote tree still registered, and reap them. Runs at exit too."""
    for pid in list(pids):
        kill_tree(pid)
    deadline = time.monotonic() + 2
    for pid in list(pids):
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    break
            except ChildProcessError:
                break
            time.sleep(0.005)
    pids.clear()


class ZygoteProcess:
    """The orchestrator's handle on one zygote: its process and control socket."""

    def __init__(self, command: Callable[[dict], SandboxCommand], log_path: Path, registry: set[int]) -> None:
        self.command = command  # config -> the wrapped command line that starts the zygote
        self.log_path = log_path
        self.registry = registry
        self.proc = None
        self.sock: socket.socket | None = None
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.spare: socket.socket | None = None  # the forked child waiting for its request
        self.spare_ready = asyncio.Event()
        self.died = asyncio.Event()
        self.alive = False
        self.executions = 0
        self.preload_failures: list[str] = []

    async def start(self, config: dict, timeout_s: float) -> None:
        ours, pair_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A high descriptor number: wrappers (unshare's set-up script) use the low ones.
        theirs = fcntl.fcntl(pair_end.fileno(), fcntl.F_DUPFD, CONTROL_FD_MIN)
        pair_end.close()
        command = self.command({**config, "control_fd": theirs})
        self.command = None  # it is bound to the pool: holding it would keep a dropped pool alive
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    command.argv,
                    env=command.env,
                    cwd=command.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(theirs,),
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                ours.close()
                raise ZygoteError(f"could not start the zygote ({command.argv[0]}): {exc}") from exc
            finally:
                os.close(theirs)
        self.registry.add(self.proc.pid)
        self.sock = ours
        self.sock.setblocking(False)
        self.alive = True
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_readable)
        try:
            ready = await asyncio.wait_for(self.receive(), timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
            raise ZygoteError(f"the zygote did not become ready within {timeout_s:g} s; {self.log_tail()}") from None
        except ZygoteDied:
            await self.kill()
            raise ZygoteError(f"the zygote exited during start-up; {self.log_tail()}") from None
        except asyncio.CancelledError:
            self.kill_now()
            raise
        if ready.get("op") != "ready":
            await self.kill()
            raise ZygoteError(f"the zygote sent {ready!r} instead of a ready message")
        self.preload_failures = list(ready.get("preload_failures") or [])

    def log_tail(self, limit: int = 2000) -> str:
        try:
            text = self.log_path.read_bytes()[-limit:].decode("utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return f"its output: {text}" if text else "it printed nothing"

    def _on_readable(self) -> None:
        try:
            frame, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except BlockingIOError:
            return
        except OSError:
            frame, fds = b"", []
        try:
            message = decode(frame) if frame else None
        except ValueError:
            message = None
        if message is not None and message.get("op") == "spare" and len(fds) == 1:
            self._set_spare(socket.socket(fileno=fds[0]))
            return
        for fd in fds:
            os.close(fd)
        if message is None:
            self._mark_dead()
            return
        self.inbox.put_nowait(message)

    def _set_spare(self, sock: socket.socket | None) -> None:
        if self.spare is not None:
            self.spare.close()
        self.spare = sock
        if sock is None:
            self.spare_ready.clear()
        else:
            self.spare_ready.set()

    async def take_spare(self) -> socket.socket:
        """The socket to the child forked for the next execution (waits for the fork)."""
        while self.spare is None:
            if not self.alive:
                raise ZygoteDied("the zygote exited")
            dead = asyncio.ensure_future(self.died.wait())
            ready = asyncio.ensure_future(self.spare_ready.wait())
            try:
                await asyncio.wait({dead, ready}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dead.cancel()
                ready.cancel()
        sock, self.spare = self.spare, None
        self.spare_ready.clear()
        return sock

    def _mark_dead(self) -> None:
        if self.alive:
            self.alive = False
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.inbox.put_nowait(None)
            self.died.set()
            self._set_spare(None)

    def check_alive(self) -> bool:
        """True unless the zygote is known dead or its socket says so right now."""
        if not self.alive or self.sock is None:
            return False
        try:
            peek = self.sock.recv(MAX_MESSAGE, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing pending: the usual idle state
        except OSError:
            peek = b""
        if not peek:
            self._mark_dead()
            return False
        return True

    async def receive(self) -> dict:
        message = await self.inbox.get()
        if message is None:
            self.inbox.put_nowait(None)  # every later receive sees the death too
            raise ZygoteDied("the zygote exited")
        return message

    def send(self, message: dict) -> None:
        frame = encode(message)
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            self._mark_dead()
            raise ZygoteDied(f"could not reach the zygote: {exc}") from exc

    async def kill(self) -> None:
        """Kill the zygote's whole tree (wrapper, zygote, children) and reap it."""
        self._terminate()
        if self.proc is None:
            return
        deadline = time.monotonic() + 5
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.registry.discard(self.proc.pid)

    def kill_now(self) -> None:
        """The same, without awaiting: for paths that are being cancelled."""
        self._terminate()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
                self.registry.discard(self.proc.pid)
            except Exception:
                pass  # the finaliser tries again at exit

    def _terminate(self) -> None:
        self._set_spare(None)
        if self.sock is not None:
            if self.alive:
                self.alive = False
                self.died.set()
                self.inbox.put_nowait(None)  # an execution waiting for a verdict learns of the death
                try:
                    asyncio.get_running_loop().remove_reader(self.sock.fileno())
                except (RuntimeError, ValueError):
                    pass
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            kill_tree(self.proc.pid)


@dataclass
class _Slot:
    index: int
    workspace: SlotWorkspace
    light: bool = False  # preloads nothing (see PoolSettings.light_size)
    paths: SandboxView | None = None  # how the slot's directory appears inside its zygote's sandbox
    uid: int | None = None  # the user its zygote and children run as, when we drop root
    position: int = 0  # index among the slots of its kind
    kind_count: int = 1
    zygote: ZygoteProcess | None = None
    replacement: asyncio.Task | None = None  # the successor being warmed up while this zygote serves
    generation: int = 0  # zygotes this slot has had


class PoolExecutor:
    """Fork-server executor: sandboxed zygotes preloaded with the data libraries."""

    name = "pool"
    stateful = False

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        settings: PoolSettings | None = None,
        mode: str = "python",
        **setting_overrides,
    ) -> None:
        if mode not in ("python", "restricted"):
            raise ValueError(f"mode must be 'python' or 'restricted', got {mode!r}")
        base = settings or PoolSettings()
        if setting_overrides:
            from dataclasses import replace

            try:
                base = replace(base, **setting_overrides)
            except TypeError as exc:
                raise TypeError(f"unknown pool setting: {exc}") from None
        self.settings = base
        self.limits = limits or Limits()
        self.mode = mode
        self.isolation = Isolation.RLIMITS  # the detected level replaces this on start()
        self._pids: set[int] = set()
        self._finalizer = weakref.finalize(self, _kill_processes, self._pids)
        self._root: Path | None = None
        self._root_finalizer = None
        self._slots: asyncio.Queue | None = None  # slots whose zygotes preload the libraries
        self._light_slots: asyncio.Queue | None = None
        self._all_slots: list[_Slot] = []
        self._start_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task] = set()
        self._closed = False
        level = None if self.settings.isolation == "auto" else self.settings.isolation
        self.isolator = Isolator(level_request=level, strict=self.settings.strict, python=self.settings.python)
        self._private_tmp = False
        self._preload_roots = frozenset(name.split(".")[0] for name in self.settings.preload)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mounts: list[Mount] = []

    # -- life cycle -------------------------------------------------------
    async def start(self) -> None:
        """Create the pool's directory and (when ``warm``) start every zygote now."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._slots is not None:
                return
            if self._closed:
                raise RuntimeError("this pool has been closed")
            self._loop = asyncio.get_running_loop()
            self._root = Path(tempfile.mkdtemp(prefix="codeloop-pool-"))
            self._root.chmod(0o755)
            self._root_finalizer = weakref.finalize(self, shutil.rmtree, str(self._root), True)
            try:
                self.isolation = await asyncio.to_thread(lambda: self.isolator.level)
            except IsolationUnavailable as exc:
                raise ZygoteError(str(exc)) from exc
            self._private_tmp = PRIVATE_TMP in self.isolator.guarantees
            # executors/ is mounted at its own path, so the zygote's file paths hold inside too.
            self._mounts = [Mount(str(HERE), str(HERE))]
            if self.settings.fast_fork and os.path.isdir(THP_SETTINGS):
                # glibc reads the THP mode here before it asks for huge pages; without it
                # (bwrap mounts no /sys) the fast-fork tuning silently does nothing.
                self._mounts.append(Mount(THP_SETTINGS, THP_SETTINGS))
            light = self.settings.light_size if self.settings.preload else 0
            kinds = [(False, i, self.settings.size) for i in range(self.settings.size)]
            kinds += [(True, i, light) for i in range(light)]
            self._all_slots = [
                _Slot(n, SlotWorkspace(self._root / f"slot-{n}"), light=is_light, position=i, kind_count=count)
                for n, (is_light, i, count) in enumerate(kinds)
            ]
            # One user id per slot (when we drop root): zygotes cannot signal each other, and
            # a fork bomb exhausts only its own slot's RLIMIT_NPROC count. A random block far
            # above ordinary ids, as the sandbox executor does, keeps pools apart.
            count = len(self._all_slots)
            first_uid = UID_BLOCKS_START + secrets.randbelow(max(1, UID_BLOCKS_SPAN // count)) * count
            for offset, slot in enumerate(self._all_slots):
                slot.uid = first_uid + offset
                # A zygote sees only its own slot's directory, never another execution's files.
                slot.paths = self.isolator.view(slot.workspace.root, self._mounts)
                if not self._private_tmp:  # no private /tmp: matplotlib's cache lives in the slot
                    (slot.workspace.root / "mpl").mkdir(exist_ok=True)
                    self.isolator.prepare(slot.workspace.root / "mpl", slot.uid)
            if self.settings.warm:
                results = await asyncio.gather(
                    *(self._fill(slot) for slot in self._all_slots), return_exceptions=True
                )
                errors = [r for r in results if isinstance(r, BaseException)]
                if len(errors) == len(results):
                    raise ZygoteError(f"no zygote could start: {errors[0]}")
            full_slots: asyncio.Queue = asyncio.Queue()
            light_slots: asyncio.Queue = asyncio.Queue()
            for slot in self._all_slots:
                (light_slots if slot.light else full_slots).put_nowait(slot)
            self._light_slots = light_slots if light else None
            self._slots = full_slots

    def _wrap(self, config: dict, slot: _Slot) -> SandboxCommand:
        """The zygote's command line, inside the same isolation as the ``sandbox`` executor.

        The zygote is the PID namespace's init (``as_pid_1``): the kernel ignores
        SIGKILL and SIGSTOP sent to it from inside, so user code cannot kill it
        with ``os.kill(os.getppid(), 9)``; and when it dies, the namespace dies.
        Its writable directory is its slot's alone.
        """
        argv = [self.settings.python, "-X", "utf8", ZYGOTE, json.dumps(config)]
        # Each child points HOME/TMPDIR at its own dir; MPLCONFIGDIR comes from the zygote's config.
        env = child_env(slot.paths.inside(slot.workspace.work))
        if self.settings.fast_fork:
            env.update(FAST_FORK_ENV)
        root = slot.workspace.root
        return self.isolator.wrap(argv, work_dir=root, mounts=self._mounts, env=env, as_pid_1=True, uid=slot.uid)

    def _zygote_config(self, slot: _Slot) -> dict:
        private_tmp = self._private_tmp
        light = slot.light
        return {
            "harness_path": HARNESS,
            "policy_path": RESTRICTED_POLICY if self.settings.restricted_policy else None,
            "preload": [] if light else list(self.settings.preload),
            "fast_fork": self.settings.fast_fork,
            "rehearse": self.settings.rehearse,
            # With a private /tmp per zygote, it is emptied after every execution
            # and matplotlib's cache lives there too: nothing is shared between runs.
            "scratch_dirs": list(SCRATCH_DIRS) if private_tmp else [],
            "env": {
                "MPLBACKEND": "Agg",
                "MPLCONFIGDIR": PRIVATE_MPL_DIR if private_tmp else slot.paths.inside(slot.workspace.root / "mpl"),
            },
        }

    async def _start_zygote(self, slot: _Slot) -> ZygoteProcess:
        zygote = ZygoteProcess(
            functools.partial(self._wrap, slot=slot), self._root / f"zygote-{slot.index}.log", self._pids
        )
        await zygote.start(self._zygote_config(slot), self.settings.start_timeout_s)
        return zygote

    async def _fill(self, slot: _Slot) -> None:
        """Start a zygote into ``slot`` (replacing whatever was there)."""
        if slot.zygote is not None:
            await slot.zygote.kill()
            slot.zygote = None
        slot.zygote = await self._start_zygote(slot)
        slot.generation += 1

    def _recycle_after(self, slot: _Slot) -> int:
        """Executions before a zygote is recycled. The first generation is staggered
        across slots, so the zygotes never all recycle at once."""
        limit = self.settings.max_executions
        if slot.generation <= 1 and slot.kind_count > 1:
            return max(1, limit * (slot.position + 1) // slot.kind_count)
        return limit

    async def _swap_in_replacement(self, slot: _Slot) -> None:
        """If the slot's successor zygote is warm, retire the old one and use it."""
        task = slot.replacement
        if task is None or not task.done():
            return
        slot.replacement = None
        if task.cancelled() or task.exception() is not None:
            return  # the old zygote keeps serving; the next recycle point tries again
        old, slot.zygote = slot.zygote, task.result()
        slot.generation += 1
        if old is not None:
            await old.kill()

    def _refill_in_background(self, slot: _Slot) -> None:
        """Replace the slot's zygote now and hand the slot back when it is warm."""

        async def refill() -> None:
            try:
                await self._fill(slot)
            except ZygoteError:
                pass  # the next execution on this slot will try again and report the error
            finally:
                if self._slots is not None and not self._closed:
                    self._queue_of(slot).put_nowait(slot)

        task = asyncio.get_running_loop().create_task(refill())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Kill every zygote and remove the pool's directory."""
        self._closed = True
        for queue in (self._slots, self._light_slots):
            if queue is not None:
                queue.put_nowait(None)  # executions waiting for a slot return instead of hanging
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for slot in self._all_slots:
            task, slot.replacement = slot.replacement, None
            if task is not None:
                task.cancel()
                try:
                    successor = await task
                except (asyncio.CancelledError, Exception):
                    successor = None
                if successor is not None:
                    await successor.kill()
            if slot.zygote is not None:
                await slot.zygote.kill()
                slot.zygote = None
        self._finalizer()
        if self._root_finalizer is not None:
            self._root_finalizer()

    async def __aenter__(self) -> "PoolExecutor":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def reset(self, session: str | None = None) -> None:
        return None

    @property
    def python(self) -> str:
        """The interpreter the zygotes run (probed for its importable modules)."""
        return self.settings.python

    @property
    def root(self) -> Path | None:
        """The host directory holding every execution's working directory."""
        return self._root

    @property
    def zygote_pids(self) -> list[int]:
        """Host PIDs of the running zygote processes (their isolation wrappers)."""
        return [s.zygote.proc.pid for s in self._all_slots if s.zygote is not None and s.zygote.proc]

    # -- executing --------------------------------------------------------
    async def execute(
        self,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        limits: Limits | None = None,
        session: str | None = None,
        mode: str | None = None,
    ) -> ExecutionResult:
        limits = limits or self.limits
        mode = mode or self.mode
        if self._slots is None:
            try:
                await self.start()
            except ZygoteError as exc:
                return self._sandbox_error(str(exc), mode)
        if self._closed:
            return self._sandbox_error("the pool has been closed", mode)
        if self._loop is not asyncio.get_running_loop():
            raise RuntimeError(
                "this PoolExecutor was started on another event loop; a pool belongs to the loop that "
                "started it (create one per loop, e.g. per asyncio.run)"
            )
        queue = self._light_slots if self._light_slots is not None and not self.needs_preload(code) else self._slots
        slot = await queue.get()
        if slot is None:  # aclose() woke the waiters: pass the wake-up on
            queue.put_nowait(None)
            return self._sandbox_error("the pool was closed while the execution waited for a zygote", mode)
        give_back = True
        try:
            await self._swap_in_replacement(slot)
            for attempt in (1, 2):
                if slot.zygote is None or not slot.zygote.check_alive():
                    try:
                        await self._fill(slot)
                    except ZygoteError as exc:
                        return self._sandbox_error(str(exc), mode)
                zygote = slot.zygote
                try:
                    result = await self._run_on(slot, code, files, limits, mode)
                    break
                except ZygoteDied:
                    # The request never reached the zygote (it died while idle), so
                    # the code did not run: replace it and try once more.
                    await zygote.kill()
                    slot.zygote = None
                    if attempt == 2:
                        return self._sandbox_error("the pool's zygote died before it could take the execution", mode)
            zygote.executions += 1
            if not zygote.alive:
                if self.settings.warm and not self._closed:
                    give_back = False
                    self._refill_in_background(slot)
                else:
                    await zygote.kill()
                    slot.zygote = None
            elif zygote.executions >= self._recycle_after(slot) and slot.replacement is None and not self._closed:
                # Recycle without a gap: the old zygote keeps serving until its
                # successor is warm; the swap happens on the slot's next execution.
                slot.replacement = asyncio.get_running_loop().create_task(self._start_zygote(slot))
            return result
        finally:
            if give_back and not self._closed:
                queue.put_nowait(slot)

    def _queue_of(self, slot: _Slot) -> asyncio.Queue:
        return self._light_slots if slot.light else self._slots

    def needs_preload(self, code: str) -> bool:
        """Whether the code imports a preloaded library, or anything outside the standard
        library (which may import one). A text scan, as the syntax tree costs a millisecond
        a run: a miss (an import built at run time, ``__import__("numpy")``) only means a
        light zygote imports the library itself, slower with the same result; a false hit
        (an import inside a string) only means the preloaded zygote runs plain code."""
        roots = self._preload_roots
        for match in IMPORT_STATEMENT.finditer(code):
            if match.group(1) is not None:
                names = [match.group(1)]
            else:
                names = [part.split()[0] for part in match.group(2).split(",") if part.strip()]
            for name in names:
                root = name.split(".")[0]
                if root and (root in roots or root not in sys.stdlib_module_names):
                    return True
        return False

    def _sandbox_error(self, message: str, mode: str) -> ExecutionResult:
        restricted = mode == "restricted"
        return ExecutionResult(
            outcome=Outcome.SANDBOX_ERROR,
            error_type="SandboxError",
            error_message=message,
            executor="restricted" if restricted else self.name,
            isolation=Isolation.RESTRICTED.value if restricted else self.isolation.value,
        )

    async def _run_on(
        self, slot: _Slot, code: str, files: Sequence[InputFile], limits: Limits, mode: str
    ) -> ExecutionResult:
        executor = "restricted" if mode == "restricted" else self.name
        isolation = Isolation.RESTRICTED.value if mode == "restricted" else self.isolation.value
        ws = slot.workspace
        ws.begin()
        try:
            self.isolator.prepare(ws.work, slot.uid)  # the slot's sandbox user writes here
            try:
                ws.add_inputs(files)
            except ValueError as exc:  # a bad input file name: reported like the sandbox executor does
                return self._sandbox_error(str(exc), mode)
            request = {
                "op": "run",
                "id": uuid.uuid4().hex,
                "workdir": slot.paths.inside(ws.work),
                "limits": limits.to_json(),
                "timeout_s": limits.timeout_s,
                "mode": mode,
            }
            if len(code) <= INLINE_CODE_CHARS and len(json.dumps(code)) <= INLINE_CODE_BYTES:
                request["code"] = code
            else:
                ws.write_code(code)
                request["code_path"] = slot.paths.inside(ws.code_path)
            proc, baseline, died = await self._exchange(slot.zygote, request, limits)
            artifacts = ws.collect_artifacts(limits)
        finally:
            ws.cleanup()
        if died is not None:
            return ExecutionResult(
                outcome=Outcome.SANDBOX_ERROR,
                stdout=proc.stdout.text(),
                stderr=proc.stderr.text(),
                error_type="SandboxError",
                error_message=died,
                duration_s=proc.duration_s,
                artifacts=artifacts,
                executor=executor,
                isolation=isolation,
            )
        return interpret(
            proc,
            limits=limits,
            executor=executor,
            isolation=isolation,
            artifacts=artifacts,
            baseline_memory_bytes=baseline,
        )

    async def _exchange(self, zygote: ZygoteProcess, request: dict, limits: Limits):
        """Send one run request with fresh pipes; collect output, report and the verdict."""
        pipes = [os.pipe() for _ in range(3)]
        collector = PipeCollector(pipes[0][0], pipes[1][0], pipes[2][0],
                                  keep_bytes=limits.output_bytes, hard_bytes=limits.output_hard_bytes)
        out, err, flood = collector.stdout, collector.stderr, collector.flood
        start = time.perf_counter()

        died: str | None = None
        verdict: dict | None = None
        try:
            try:
                spare = await zygote.take_spare()  # ZygoteDied before the send: not delivered
                try:
                    socket.send_fds(spare, [encode(request)], [w for _, w in pipes])
                except OSError as exc:
                    await zygote.kill()
                    raise ZygoteDied(f"the pool's child could not take the request: {exc}") from exc
                finally:
                    spare.close()
            finally:
                for _, write_end in pipes:
                    os.close(write_end)
            try:
                zygote.send({"op": "run", "id": request["id"], "timeout_s": limits.timeout_s})
            except ZygoteDied:
                pass  # the code may be running already: the verdict below reports the death
            verdict, died = await self._await_verdict(zygote, request["id"], flood, limits)
            await collector.drain(0.5 if died is None else 0.05)
        finally:
            collector.stop()
            for read_end, _ in pipes:
                os.close(read_end)
        duration = time.perf_counter() - start
        if died is not None:
            return ProcessOutcome(None, None, out, err, bytes(collector.report), duration, None, None), 0, died
        status = verdict.get("status")
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        signal_number = -code if code is not None and code < 0 else None
        proc = ProcessOutcome(
            returncode=None if signal_number or code is None else code,
            signal=signal_number,
            stdout=out,
            stderr=err,
            report=bytes(collector.report),
            duration_s=duration,
            cpu_time_s=verdict.get("cpu_time_s"),
            peak_memory_bytes=(verdict["maxrss_kb"] * 1024) if verdict.get("maxrss_kb") is not None else None,
            timed_out=bool(verdict.get("timed_out")),
            output_exceeded=flood.is_set(),
        )
        return proc, int(verdict.get("baseline_rss") or 0), None

    async def _await_verdict(self, zygote: ZygoteProcess, request_id: str, flood: asyncio.Event, limits: Limits):
        """The zygote's ``done`` message; a flood sends ``kill``; a silent zygote is killed."""
        backstop = limits.timeout_s + self.settings.backstop_s
        receive = asyncio.ensure_future(zygote.receive())
        flooded = asyncio.ensure_future(flood.wait())
        try:
            done, _ = await asyncio.wait({receive, flooded}, timeout=backstop, return_when=asyncio.FIRST_COMPLETED)
            if flooded in done and receive not in done:
                try:
                    zygote.send({"op": "kill", "id": request_id})
                except ZygoteDied:
                    pass  # the receive below reports the death
                done, _ = await asyncio.wait({receive}, timeout=self.settings.backstop_s)
            if receive not in done:
                await zygote.kill()
                return None, (
                    f"the pool's zygote did not answer within {backstop:g} s; it was killed and will be replaced"
                )
            try:
                message = receive.result()
                while message.get("op") == "done" and message.get("id") != request_id:
                    message = await asyncio.wait_for(zygote.receive(), self.settings.backstop_s)  # a stale verdict
            except asyncio.TimeoutError:
                await zygote.kill()
                return None, "the pool's zygote stopped answering; it was killed and will be replaced"
            except ZygoteDied:
                await zygote.kill()
                return None, (
                    "the pool's zygote died during the execution (the code may have killed it); "
                    "it will be replaced and the execution was not retried"
                )
            if message.get("op") != "done" or message.get("id") != request_id:
                await zygote.kill()
                return None, f"the pool's zygote answered out of turn: {message!r}"
            return message, None
        except asyncio.CancelledError:
            # The caller gave up mid-run: the zygote's state is unknown, so it is
            # replaced rather than trusted with the next request.
            zygote.kill_now()
            raise
        finally:
            for task in (receive, flooded):
                if not task.done():
                    task.cancel()
