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
import functools
import json
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ._shared import INSIDE, child_env, detect_isolation
from .base import BaseExecutor, ExecutionResult, InputFile, Isolation, Limits
from .inside.zygote import FAST_FORK_ENV
from .isolation import PRIVATE_TMP, IsolationUnavailable, Isolator, Mount, SandboxCommand
from .pool_exchange import RunContext, run_on_slot
from .pool_routing import needs_preload, preload_roots
from .pool_slots import Slot, lay_out_slots
from .pool_zygote import ZygoteDied, ZygoteError, ZygoteProcess, kill_processes

ZYGOTE = str(INSIDE / "zygote.py")
HARNESS = str(INSIDE / "harness.py")
RESTRICTED_POLICY = str(INSIDE / "restricted_policy.py")

THP_SETTINGS = "/sys/kernel/mm/transparent_hugepage"
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # private to each zygote's sandbox at bwrap/unshare level
PRIVATE_MPL_DIR = "/tmp/.codeloop-matplotlib"
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


class PoolExecutor(BaseExecutor):
    """Fork-server executor: sandboxed zygotes preloaded with the data libraries."""

    name = "pool"

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
        super().__init__(limits)
        base = settings or PoolSettings()
        if setting_overrides:
            try:
                base = replace(base, **setting_overrides)
            except TypeError as exc:
                raise TypeError(f"unknown pool setting: {exc}") from None
        self.settings = base
        self.mode = mode
        self._pids: set[int] = set()
        self._finalizer = weakref.finalize(self, kill_processes, self._pids)
        self._root: Path | None = None
        self._root_finalizer: weakref.finalize | None = None
        self._slots: asyncio.Queue | None = None  # slots whose zygotes preload the libraries
        self._light_slots: asyncio.Queue | None = None
        self._all_slots: list[Slot] = []
        self._start_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task] = set()
        self._closed = False
        level = None if self.settings.isolation == "auto" else self.settings.isolation
        self.isolator = Isolator(level_request=level, strict=self.settings.strict, python=self.settings.python)
        self._private_tmp = False
        self._preload_roots = preload_roots(self.settings.preload)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mounts: list[Mount] = []

    @property
    def isolation(self) -> Isolation | None:
        """The level the zygotes run at, once ``start()`` detected it; never probes."""
        return self.isolator.detected

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
            try:
                await detect_isolation(self.isolator)
            except IsolationUnavailable as exc:
                raise ZygoteError(str(exc)) from exc
            self._root = Path(tempfile.mkdtemp(prefix="codeloop-pool-"))
            self._root.chmod(0o755)
            self._root_finalizer = weakref.finalize(self, shutil.rmtree, str(self._root), True)
            self._private_tmp = PRIVATE_TMP in self.isolator.guarantees
            self._mounts = self._zygote_mounts()
            light = self.settings.light_size if self.settings.preload else 0
            self._all_slots = lay_out_slots(
                self._root, self.settings.size, light, self.isolator, self._mounts, self._private_tmp
            )
            if self.settings.warm:
                await self._fill_all()
            full_slots: asyncio.Queue = asyncio.Queue()
            light_slots: asyncio.Queue = asyncio.Queue()
            for slot in self._all_slots:
                (light_slots if slot.light else full_slots).put_nowait(slot)
            self._light_slots = light_slots if light else None
            self._slots = full_slots

    def _zygote_mounts(self) -> list[Mount]:
        # executors/inside/ is mounted at its own path, so the zygote's file paths hold inside too.
        mounts = [Mount(str(INSIDE), str(INSIDE))]
        if self.settings.fast_fork and os.path.isdir(THP_SETTINGS):
            # glibc reads the THP mode here before it asks for huge pages; without it
            # (bwrap mounts no /sys) the fast-fork tuning silently does nothing.
            mounts.append(Mount(THP_SETTINGS, THP_SETTINGS))
        return mounts

    async def _fill_all(self) -> None:
        results = await asyncio.gather(*(self._fill(slot) for slot in self._all_slots), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise ZygoteError(f"no zygote could start: {errors[0]}")

    def _wrap(self, config: dict, slot: Slot) -> SandboxCommand:
        """The zygote's command line, inside the same isolation as the ``sandbox`` executor.

        The zygote is the PID namespace's init (``as_pid_1``): the kernel ignores
        SIGKILL and SIGSTOP sent to it from inside, so user code cannot kill it
        with ``os.kill(os.getppid(), 9)``; and when it dies, the namespace dies.
        Its writable directory is its slot's alone.
        """
        argv = [self.settings.python, "-X", "utf8", ZYGOTE, json.dumps(config)]
        # Each child points HOME/TMPDIR at its own dir; MPLCONFIGDIR comes from the zygote's config.
        assert slot.paths is not None  # the slots are made with their views
        env = child_env(slot.paths.inside(slot.workspace.work))
        if self.settings.fast_fork:
            env.update(FAST_FORK_ENV)
        root = slot.workspace.root
        return self.isolator.wrap(argv, work_dir=root, mounts=self._mounts, env=env, as_pid_1=True, uid=slot.uid)

    def _zygote_config(self, slot: Slot) -> dict:
        private_tmp = self._private_tmp
        light = slot.light
        assert slot.paths is not None  # the slots are made with their views
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

    async def _start_zygote(self, slot: Slot) -> ZygoteProcess:
        assert self._root is not None  # slots exist only in a started pool
        zygote = ZygoteProcess(
            functools.partial(self._wrap, slot=slot), self._root / f"zygote-{slot.index}.log", self._pids
        )
        await zygote.start(self._zygote_config(slot), self.settings.start_timeout_s)
        return zygote

    async def _fill(self, slot: Slot) -> None:
        """Start a zygote into ``slot`` (replacing whatever was there)."""
        if slot.zygote is not None:
            await slot.zygote.kill()
            slot.zygote = None
        slot.zygote = await self._start_zygote(slot)
        slot.generation += 1

    def _refill_in_background(self, slot: Slot) -> None:
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
            await slot.close()
        self._finalizer()
        if self._root_finalizer is not None:
            self._root_finalizer()

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

    async def settled(self) -> None:
        """Wait until every zygote being started in the background (a recycled zygote's
        successor, a replacement for a dead one) is ready or has failed."""
        pending = [*self._background, *(s.replacement for s in self._all_slots if s.replacement is not None)]
        if pending:
            await asyncio.wait(pending)

    def needs_preload(self, code: str) -> bool:
        """Whether the code needs a zygote with the libraries preloaded (see :mod:`pool_routing`)."""
        return needs_preload(code, self._preload_roots)

    # -- executing --------------------------------------------------------
    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        return await self.run_in_mode(code, files=files, limits=limits, mode=self.mode)

    async def run_in_mode(
        self, code: str, *, files: Sequence[InputFile] = (), limits: Limits | None = None, mode: str
    ) -> ExecutionResult:
        """Run ``code`` as plain Python or under the RestrictedPython policy (``mode``)."""
        ctx = self._context(mode)
        if self._slots is None:
            try:
                await self.start()
            except ZygoteError as exc:
                return ctx.error(str(exc))
            ctx = self._context(mode)  # the level is known now
        if self._closed:
            return ctx.error("the pool has been closed")
        if self._loop is not asyncio.get_running_loop():
            raise RuntimeError(
                "this PoolExecutor was started on another event loop; a pool belongs to the loop that "
                "started it (create one per loop, e.g. per asyncio.run)"
            )
        queue = self._light_slots if self._light_slots is not None and not self.needs_preload(code) else self._slots
        assert queue is not None  # started above
        slot = await queue.get()
        if slot is None:  # aclose() woke the waiters: pass the wake-up on
            queue.put_nowait(None)
            return ctx.error("the pool was closed while the execution waited for a zygote")
        give_back = True
        try:
            await slot.swap_in_replacement()
            result = await self._run_with_retry(slot, code, files, limits or self.limits, ctx)
            if result is not None and slot.zygote is not None:
                give_back = await self._after_run(slot)
            return result or ctx.error("the pool's zygote died before it could take the execution")
        except ZygoteError as exc:
            return ctx.error(str(exc))
        finally:
            if give_back and not self._closed:
                queue.put_nowait(slot)

    def _context(self, mode: str) -> RunContext:
        restricted = mode == "restricted"
        return RunContext(
            executor="restricted" if restricted else self.name,
            isolation=Isolation.RESTRICTED if restricted else (self.isolation or Isolation.NONE),
            mode=mode,
            isolator=self.isolator,
            backstop_s=self.settings.backstop_s,
        )

    async def _run_with_retry(
        self, slot: Slot, code: str, files: Sequence[InputFile], limits: Limits, ctx: RunContext
    ) -> ExecutionResult | None:
        """Run on the slot's zygote; one more try with a fresh zygote if the request never
        reached it (it died while idle, so the code did not run). None after two misses."""
        for _attempt in (1, 2):
            if slot.zygote is None or not slot.zygote.check_alive():
                await self._fill(slot)  # ZygoteError: reported by the caller
            zygote = slot.zygote
            assert zygote is not None  # _fill gave the slot one or raised
            try:
                result = await run_on_slot(slot, code, files, limits, ctx)
            except ZygoteDied:
                await zygote.kill()
                slot.zygote = None
                continue
            zygote.executions += 1
            return result
        return None

    async def _after_run(self, slot: Slot) -> bool:
        """Replace a dead zygote, schedule a recycle; False when the slot goes back later."""
        zygote = slot.zygote
        assert zygote is not None  # the caller checked
        if not zygote.alive:
            if self.settings.warm and not self._closed:
                self._refill_in_background(slot)
                return False
            await zygote.kill()
            slot.zygote = None
        elif (
            zygote.executions >= slot.recycle_after(self.settings.max_executions)
            and slot.replacement is None
            and not self._closed
        ):
            # Recycle without a gap: the old zygote keeps serving until its
            # successor is warm; the swap happens on the slot's next execution.
            slot.replacement = asyncio.get_running_loop().create_task(self._start_zygote(slot))
        return True

    def _queue_of(self, slot: Slot) -> asyncio.Queue:
        queue = self._light_slots if slot.light else self._slots
        assert queue is not None  # slots exist only in a started pool
        return queue
