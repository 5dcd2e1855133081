"""The batch driver: validate, open the store, run items concurrently, write each result as it lands.

The driver is the store's only writer. Items run on an engine (this process,
or Ray workers); the driver marks each one ``running`` before it starts and
writes its result, attempts and artifacts in one transaction when it ends.
Cancellation (Ctrl-C) marks in-flight items pending again; a ``kill -9``
leaves them ``running``, which the next ``resume`` turns back into pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import LoopConfig
from ..models.base import Model
from ..types import RunResult
from .engine import Engine, ItemOutcome, LocalEngine, executor_name, model_name
from .inputs import BatchItem, coerce_items, load_items
from .limits import BackoffGate, BackoffPolicy
from .progress import BatchProgress
from .settings import BatchSettings
from .store import DB_NAME, BatchStore, StoreError
from .writer import StoreWriter

LOCK_NAME = ".lock"


class BatchBusyError(StoreError):
    """Another process is running a batch in the same run directory."""


def _load(items: Any) -> list[BatchItem] | None:
    if items is None:
        return None
    if isinstance(items, (str, Path)):
        return load_items(items)
    return coerce_items(items)


class _RunDirLock:
    """An exclusive flock on RUN_DIR/.lock: two drivers on one store would run items twice.
    The kernel drops it when the process dies, so a kill -9 never leaves it stale."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise BatchBusyError(f"another codeloop batch is running in {run_dir}") from None

    def release(self) -> None:
        os.close(self._fd)


def open_batch(
    store: BatchStore, settings: BatchSettings, items: list[BatchItem] | None, *, resume: bool, force: bool
) -> list[str]:
    """Create the batch or check a resume against it. Returns the ids of items
    a dead process left running (now pending again)."""
    stored_json = store.settings()
    if stored_json is None:
        if items is None:
            raise StoreError(f"{store.run_dir} holds no batch to resume; give the prompts to start one")
        store.initialise(settings.to_json(), items)
        return []
    counts = store.counts()
    if not resume:
        raise StoreError(
            f"{store.run_dir} already holds a batch ({counts['total']} items, {counts['done']} finished); "
            "pass --resume (resume=True) to continue it, or choose another run directory"
        )
    problems = settings.differences(BatchSettings.from_json(stored_json))
    changed: list[BatchItem] = []
    if items is not None:
        known = {item.id: item for item in store.items()}
        for item in items:
            old = known.get(item.id)
            if old is not None and (old.prompt, old.files, old.metadata) != (item.prompt, item.files, item.metadata):
                changed.append(item)
        problems += [
            f"item {item.id!r}: prompt, files or metadata differ from the stored item" for item in changed[:10]
        ]
        if len(changed) > 10:
            problems.append(f"... and {len(changed) - 10} more changed items")
    if problems and not force:
        listing = "\n".join(f"  {p}" for p in problems)
        raise StoreError(
            f"{store.run_dir} was started with different settings:\n{listing}\n"
            "Resume with the same settings, or pass --force (force=True) to continue with the new "
            "ones (finished items are kept; changed items run again)."
        )
    if problems:
        store.replace_settings(settings.to_json())
        store.reset_items(changed)
    if items is not None:
        store.add_items(items)
    return store.recover_in_flight()


async def run_batch(
    items: str | Path | Iterable[str | BatchItem | Mapping[str, Any]] | None,
    *,
    model: Model | str,
    run_dir: str | Path,
    config: LoopConfig | None = None,
    executor: Any = None,
    concurrency: int = 8,
    execution_concurrency: int | None = None,
    resume: bool = False,
    force: bool = False,
    rerun_errors: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
    backoff: BackoffPolicy | None = None,
    progress: BatchProgress | None = None,
    durability: str = "normal",
    **loop_settings: Any,
) -> AsyncIterator[tuple[str, RunResult]]:
    """Run a batch, yielding ``(item id, RunResult)`` as each item's result is stored.

    ``items``: a path (JSONL, CSV, text file or directory), an iterable of prompts / :class:`BatchItem` /
    mappings, or None to resume from the store alone. ``model``: a Model or a spec string. Each item runs
    with ``config`` (on ``resume`` without one: the stored config) and ``loop_settings`` (LoopConfig fields
    by keyword) over it; ``executor`` (a name, an Executor or a factory) overrides the config's executor.
    A config unlike the stored one needs ``force``. ``concurrency``: items in flight; ``execution_concurrency``
    (default: the same): executions. Finished items are not run again."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    loaded, run_path = _load(items), Path(run_dir)  # validation first: nothing runs on bad input
    base = config or (stored_config(run_path) if resume else None) or LoopConfig()
    loop, executor_spec = resolve_executor(base.with_settings(loop_settings), executor)
    settings = _batch_settings(model, loop, engine, concurrency, execution_concurrency)
    progress = progress or BatchProgress(enabled=False)
    # Built (not started) before the store is touched, so a bad engine setup changes nothing on disk.
    runner_engine = _make_engine(
        engine,
        model=model,
        executor=executor_spec,
        settings=settings,
        backoff=backoff or BackoffPolicy(),
        progress=progress,
        ray_address=ray_address,
        ray_workers=ray_workers,
    )
    with _locked_store(run_path, durability) as store:
        open_batch(store, settings, loaded, resume=resume, force=force)
        todo = deque(store.runnable_items(rerun_errors=rerun_errors))
        counts = store.counts()
        # aclosing: if our consumer stops early, the driver's cleanup runs now, before the store closes.
        driver = _Driver(store, runner_engine, todo, progress)
        async with contextlib.aclosing(
            driver.results(settings, already_done=counts["total"] - len(todo), total=counts["total"])
        ) as pairs:
            async for pair in pairs:
                yield pair


def _batch_settings(
    model: Model | str, loop: LoopConfig, engine: str | Engine, concurrency: int, execution_concurrency: int | None
) -> BatchSettings:
    """The settings stored with the batch (and checked on resume); executions default to ``concurrency``."""
    return BatchSettings(
        model=model_name(model),
        config=loop,
        concurrency=concurrency,
        execution_concurrency=execution_concurrency or concurrency,
        engine=engine if isinstance(engine, str) else engine.name,
    )


@contextlib.contextmanager
def _locked_store(run_path: Path, durability: str) -> Iterator[BatchStore]:
    """RUN_DIR's store, open under the run-dir lock; both are let go on leaving, however that happens."""
    lock = _RunDirLock(run_path)
    try:
        with BatchStore(run_path, durability=durability) as store:
            yield store
    finally:
        lock.release()


def resolve_executor(config: LoopConfig, executor: Any) -> tuple[LoopConfig, Any]:
    """The config naming the executor that will run, and what to build it from:
    ``executor`` (a name, an Executor or a factory) when given, else the config's name."""
    if isinstance(executor, str):
        config = config.replace(executor=executor)
    spec = config.executor if executor is None or isinstance(executor, str) else executor
    return config.replace(executor=executor_name(spec)), spec


def stored_config(run_dir: Path) -> LoopConfig | None:
    """The config a batch in ``run_dir`` was started with, if there is one."""
    if not (run_dir / DB_NAME).exists():
        return None
    with BatchStore(run_dir, create=False) as store:
        stored = store.settings()
    return BatchSettings.from_json(stored).config if stored else None


def _make_engine(
    engine: str | Engine,
    *,
    model: Any,
    executor: Any,
    settings: BatchSettings,
    backoff: BackoffPolicy,
    progress: BatchProgress,
    ray_address: str | None,
    ray_workers: int | None,
) -> Engine:
    """``engine`` itself when given one, else a new (not started) engine of that name."""
    if not isinstance(engine, str):
        return engine
    name = engine
    sizes = {"concurrency": settings.concurrency, "execution_concurrency": settings.execution_concurrency}
    if name == "local":
        gate = BackoffGate(base_delay_s=backoff.base_delay_s, max_delay_s=backoff.max_delay_s)
        return LocalEngine(
            model,
            executor,
            config=settings.config,
            gate=gate,
            max_rate_limit_retries=backoff.max_rate_limit_retries,
            on_rate_limit=progress.rate_limited_call,
            **sizes,
        )
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(
            model, executor, config=settings.config, backoff=backoff, address=ray_address, workers=ray_workers, **sizes
        )
    raise ValueError(f"unknown engine {name!r}; choose 'local' or 'ray'")


class _Driver:
    """Runs the todo items on the engine from ``engine.slots`` workers and yields
    each ``(id, result)`` once its result is committed to the store."""

    def __init__(self, store: BatchStore, engine: Engine, todo: deque[BatchItem], progress: BatchProgress) -> None:
        self.store, self.engine, self.todo, self.progress = store, engine, todo, progress
        self.writer = StoreWriter(store, asyncio.get_running_loop())
        self.finished: asyncio.Queue[tuple[str, RunResult] | BaseException] = asyncio.Queue()
        self.in_flight: set[str] = set()
        self.session: int | None = None

    def report_failure(self, future: asyncio.Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self.finished.put_nowait(error)

    def committed(self, item_id: str, outcome: ItemOutcome, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.finished.put_nowait(error)
            return
        self.in_flight.discard(item_id)
        self.progress.item_finished(future.result(), outcome.result, outcome.rate_limited)
        self.finished.put_nowait((item_id, outcome.result))

    async def worker(self) -> None:
        # A worker never waits for the store: the writer applies changes in submission order
        # (``running`` before the result), and an item counts as finished, and is yielded, only
        # once its result is committed. A slow fsync then delays results, not model calls.
        store, writer = self.store, self.writer
        try:
            while self.todo:
                item = self.todo.popleft()
                self.in_flight.add(item.id)
                writer.submit(store.mark_running, item.id, self.session).add_done_callback(self.report_failure)
                outcome = await self.engine.run(item)
                writer.submit(
                    store.finish, item.id, outcome.result, rate_limited=outcome.rate_limited
                ).add_done_callback(functools.partial(self.committed, item.id, outcome))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an engine failure stops the batch, loudly
            self.finished.put_nowait(exc)

    async def results(
        self, settings: BatchSettings, *, already_done: int, total: int
    ) -> AsyncGenerator[tuple[str, RunResult], None]:
        to_run = len(self.todo)
        reason = "interrupted"
        workers: list[asyncio.Task[None]] = []
        self.progress.start(total=total, already_done=already_done)
        try:
            self.session = await self.writer.submit(self.store.begin_session, settings.to_json())
            await self.engine.start()
            workers = [asyncio.create_task(self.worker()) for _ in range(min(self.engine.slots, to_run))]
            for _ in range(to_run):
                got = await self.finished.get()
                if isinstance(got, BaseException):
                    reason = f"failed: {type(got).__name__}: {got}"
                    raise got
                yield got
            reason = "completed"
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Queued after any finish() a cancelled worker had submitted, so an item whose
            # result was committed is not marked interrupted (mark_interrupted skips it).
            ended = self.writer.submit(_end_session, self.store, self.session, sorted(self.in_flight), reason)
            self.writer.close()
            self.progress.stop()
            await self.engine.aclose()
            await ended  # resolved by now; raises if the session could not be closed


def _end_session(store: BatchStore, session: int | None, in_flight: list[str], reason: str) -> None:
    if in_flight:
        store.mark_interrupted(in_flight)
    if session is not None:
        store.end_session(session, reason)


def run_batch_sync(items: Any, **options: Any) -> list[tuple[str, RunResult]]:
    """Run :func:`run_batch` to the end and return the ``(id, result)`` pairs
    in completion order. Ctrl-C marks in-flight items pending, then raises."""

    async def collect() -> list[tuple[str, RunResult]]:
        return [pair async for pair in run_batch(items, **options)]

    return asyncio.run(collect())
