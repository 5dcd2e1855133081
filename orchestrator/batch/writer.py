"""The store's single writer: one thread, operations in submission order, group commit.

Store writes leave the event loop because a commit can wait on a WAL
checkpoint's fsync (tens of milliseconds), which would stall every model call
in flight. The thread applies whatever operations queued up while it was busy
in one transaction, each inside its own savepoint, so under load a batch pays
one commit and one wake-up of the event loop for many items, and each item's
change is still all-or-nothing. A submitter's future resolves only after the
commit: what the driver yields is on disk.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

from .store import BatchStore

MAX_GROUP = 256  # operations per commit, so one commit never holds back results for long

_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():  # its submitter was cancelled; the change itself still applied (or not)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class StoreWriter:
    def __init__(self, store: BatchStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="codeloop-store-writer")
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue ``fn(*args, **kwargs)`` (a store method); the future resolves once it is committed."""
        future = self._loop.create_future()
        self._queue.put((functools.partial(fn, *args, **kwargs), future))
        return future

    def close(self) -> None:
        """Apply everything queued, then stop the thread (blocks until it has)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            ops = [first]
            while len(ops) < MAX_GROUP:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stopping = True
                    break
                ops.append(op)
            outcomes: list[_Outcome] = []
            try:
                with self._store.group():
                    for call, future in ops:
                        try:
                            outcomes.append((future, call(), None))
                        except Exception as exc:  # this change rolled back to its savepoint; the rest stand
                            outcomes.append((future, None, exc))
            except BaseException as exc:  # the commit failed: nothing in the group was stored
                outcomes = [(future, None, exc) for _, future in ops]
            try:
                self._loop.call_soon_threadsafe(_resolve, outcomes)
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                pass
