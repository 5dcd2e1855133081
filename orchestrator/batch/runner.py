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
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executors.base import Limits

from ..models.base import Model
from ..types import RunResult
from .engine import Engine, ItemOutcome, LocalEngine, spec_names
from .inputs import BatchItem, coerce_items, load_items
from .limits import BackoffGate
from .progress import BatchProgress
from .settings import BatchSettings
from .store import BatchStore, StoreError
from .writer import StoreWriter

LOCK_NAME = ".lock"


class BatchBusyError(StoreError):
    """Another process is running a batch in the same run directory."""


@dataclass
class BackoffPolicy:
    """The shared rate-limit backoff: first pause, longest pause, and how many
    429s one model call may meet before its item is recorded as an error."""

    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_rate_limit_retries: int = 8


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


def open_batch(store: BatchStore, settings: BatchSettings, items: list[BatchItem] | None, *,
               resume: bool, force: bool) -> list[str]:
    """Create the batch or check a resume against it. Returns the ids of items
    a dead process left running (now pending again)."""
    stored = store.settings()
    if stored is None:
        if items is None:
            raise StoreError(f"{store.run_dir} holds no batch to resume; give the prompts to start one")
        store.initialise(settings.to_json(), items)
        return []
    counts = store.counts()
    if not resume:
        raise StoreError(
            f"{store.run_dir} already holds a batch ({counts['total']} items, {counts['done']} finished); "
            "pass --resume (resume=True) to continue it, or choose another run directory")
    problems = settings.differences(stored)
    changed: list[BatchItem] = []
    if items is not None:
        known = {item.id: item for item in store.items()}
        for item in items:
            old = known.get(item.id)
            if old is not None and (old.prompt, old.files, old.metadata) != (item.prompt, item.files, item.metadata):
                changed.append(item)
        problems += [f"item {item.id!r}: prompt, files or metadata differ from the stored item" for item in changed[:10]]
        if len(changed) > 10:
            problems.append(f"... and {len(changed) - 10} more changed items")
    if problems and not force:
        listing = "\n".join(f"  {p}" for p in problems)
        raise StoreError(f"{store.run_dir} was started with different settings:\n{listing}\n"
                         "Resume with the same settings, or pass --force (force=True) to continue with the new "
                         "ones (finished items are kept; changed items run again).")
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
    executor: Any = "local",
    executor_options: dict[str, Any] | None = None,
    concurrency: int = 8,
    execution_concurrency: int | None = None,
    max_retries: int = 5,
    max_steps: int = 10,
    limits: Limits | None = None,
    tools: str = "auto",
    require_code: str = "auto",
    resume: bool = False,
    force: bool = False,
    rerun_errors: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
    backoff: BackoffPolicy | None = None,
    progress: BatchProgress | None = None,
    durability: str = "normal",
) -> AsyncIterator[tuple[str, RunResult]]:
    """Run a batch, yielding ``(item id, RunResult)`` as each item's result is stored.

    ``items`` is a path (JSONL, CSV, text file or directory), an iterable of
    prompts / :class:`BatchItem` / mappings, or None to resume from the store
    alone. ``model`` is a Model or a spec string; ``executor`` a name, an
    Executor or a factory. ``concurrency`` is the number of items in flight
    (so also of concurrent model calls) and ``execution_concurrency``
    (default: the same) bounds concurrent executions.
    Items already finished in ``run_dir`` are not run again and not yielded.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    execution_concurrency = execution_concurrency or concurrency
    backoff = backoff or BackoffPolicy()
    loaded = _load(items)  # validation first: nothing runs on bad input
    model_name, executor_name = spec_names(model, executor)
    engine_name = engine if isinstance(engine, str) else engine.name
    settings = BatchSettings(model=model_name, executor=executor_name, executor_options=dict(executor_options or {}),
                             max_retries=max_retries, max_steps=max_steps, limits=limits.to_json() if limits else None,
                             tools=tools, require_code=require_code,
                             concurrency=concurrency, execution_concurrency=execution_concurrency, engine=engine_name)
    progress = progress or BatchProgress(enabled=False)
    gate = BackoffGate(base_delay_s=backoff.base_delay_s, max_delay_s=backoff.max_delay_s)
    # Built (not started) before the store is touched, so a bad engine setup changes nothing on disk.
    if isinstance(engine, str):
        runner_engine = _make_engine(engine, model=model, executor=executor, executor_options=executor_options,
                                     concurrency=concurrency, execution_concurrency=execution_concurrency,
                                     max_retries=max_retries, max_steps=max_steps, limits=limits, gate=gate,
                                     tools=tools, require_code=require_code, backoff=backoff, progress=progress, ray_address=ray_address,
                                     ray_workers=ray_workers)
    else:
        runner_engine = engine
    run_path = Path(run_dir)
    lock = _RunDirLock(run_path)
    store: BatchStore | None = None
    try:
        store = BatchStore(run_path, durability=durability)
        open_batch(store, settings, loaded, resume=resume, force=force)
        todo = deque(store.runnable_items(rerun_errors=rerun_errors))
        counts = store.counts()
        # aclosing: if our consumer stops early, the driver's cleanup runs now, before the store closes.
        async with contextlib.aclosing(_drive(store, runner_engine, todo, settings, progress,
                                              already_done=counts["total"] - len(todo),
                                              total=counts["total"])) as pairs:
            async for pair in pairs:
                yield pair
    finally:
        if store is not None:
            store.close()
        lock.release()


def _make_engine(name: str, *, model: Any, executor: Any, executor_options: dict[str, Any] | None, concurrency: int,
                 execution_concurrency: int, max_retries: int, max_steps: int, limits: Limits | None,
                 gate: BackoffGate, tools: str, require_code: str, backoff: BackoffPolicy, progress: BatchProgress, ray_address: str | None,
                 ray_workers: int | None) -> Engine:
    if name == "local":
        return LocalEngine(model, executor, executor_options=executor_options, concurrency=concurrency,
                           execution_concurrency=execution_concurrency, max_retries=max_retries, max_steps=max_steps,
                           limits=limits, gate=gate, tools=tools, require_code=require_code,
                           max_rate_limit_retries=backoff.max_rate_limit_retries,
                           on_rate_limit=progress.rate_limited_call)
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(model, executor, executor_options=executor_options, concurrency=concurrency,
                         execution_concurrency=execution_concurrency, max_retries=max_retries, max_steps=max_steps,
                         limits=limits, tools=tools, require_code=require_code, backoff=backoff,
                         address=ray_address, workers=ray_workers)
    raise ValueError(f"unknown engine {name!r}; choose 'local' or 'ray'")


async def _drive(store: BatchStore, engine: Engine, todo: deque[BatchItem], settings: BatchSettings,
                 progress: BatchProgress, *, already_done: int, total: int) -> AsyncIterator[tuple[str, RunResult]]:
    writer = StoreWriter(store, asyncio.get_running_loop())
    to_run = len(todo)
    finished: asyncio.Queue[tuple[str, RunResult] | BaseException] = asyncio.Queue()
    in_flight: set[str] = set()
    reason = "interrupted"
    session: int | None = None

    def report_failure(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            finished.put_nowait(future.exception())

    def committed(item_id: str, outcome: ItemOutcome, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            finished.put_nowait(future.exception())
            return
        in_flight.discard(item_id)
        progress.item_finished(future.result(), outcome.result, outcome.rate_limited)
        finished.put_nowait((item_id, outcome.result))

    async def worker() -> None:
        # A worker never waits for the store: the writer applies changes in submission order
        # (``running`` before the result), and an item counts as finished, and is yielded, only
        # once its result is committed. A slow fsync then delays results, not model calls.
        try:
            while todo:
                item = todo.popleft()
                in_flight.add(item.id)
                writer.submit(store.mark_running, item.id, session).add_done_callback(report_failure)
                outcome = await engine.run(item)
                writer.submit(store.finish, item.id, outcome.result, rate_limited=outcome.rate_limited
                              ).add_done_callback(functools.partial(committed, item.id, outcome))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an engine failure stops the batch, loudly
            finished.put_nowait(exc)

    workers: list[asyncio.Task[None]] = []
    progress.start(total=total, already_done=already_done)
    try:
        session = await writer.submit(store.begin_session, settings.to_json())
        await engine.start()
        workers = [asyncio.create_task(worker()) for _ in range(min(engine.slots, to_run))]
        for _ in range(to_run):
            got = await finished.get()
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
        ended = writer.submit(_end_session, store, session, sorted(in_flight), reason)
        writer.close()
        progress.stop()
        await engine.aclose()
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
