"""The batch store: one SQLite database per run directory (``RUN_DIR/runs.db``).

WAL mode plus one transaction per state change means a ``kill -9`` at any
moment leaves the database consistent: an item is either finished (result,
attempts and artifact rows all present) or not. Attempts and artifacts are
written only in the transaction that finishes an item, so a re-run never
leaves duplicates. Artifact bytes live in files under
``RUN_DIR/artifacts/<id>/``; the stored result JSON references them and
:meth:`BatchStore.result` reads them back, so a result round-trips exactly.

One object owns the connection and every write goes through it: the batch
driver is the single writer.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executors.base import Artifact

from ..types import RunResult, RunStatus
from .inputs import BatchItem
from .migrations import BATCH_MIGRATIONS, MigratedStore, MigrationError, open_migrated

DB_NAME = "runs.db"
ARTIFACTS_DIR = "artifacts"
SCHEMA_VERSION = len(BATCH_MIGRATIONS)  # recorded in the batch row, for people reading the file
# Per-stream cap for the attempts table (the result JSON keeps the executor's own capped output).
ATTEMPT_OUTPUT_CAP = 16 * 1024

PENDING, RUNNING, DONE, ERROR = "pending", "running", "done", "error"


class StoreError(RuntimeError):
    """The run directory cannot be used as asked (missing, foreign, or settings differ)."""


@dataclass
class ItemRecord:
    """One row of the items table, as export and report read it."""

    seq: int
    id: str
    prompt: str
    files: list[str]
    metadata: dict[str, Any]
    status: str
    run_status: str | None
    error: str | None
    starts: int
    interruptions: int
    rate_limited: int
    wall_time_s: float | None
    model_time_s: float | None
    execution_time_s: float | None
    executions: int | None
    retries: int | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    requests: int | None
    cost_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemRecord:
        return cls(**data)


_RECORD_COLUMNS = (
    "seq, id, prompt, files, metadata, status, run_status, error, starts, interruptions, rate_limited, "
    "wall_time_s, model_time_s, execution_time_s, executions, retries, input_tokens, output_tokens, "
    "total_tokens, requests, cost_usd"
)


_ITEM_COLUMNS = "id, prompt, files, metadata, source"


def _batch_item(row: sqlite3.Row) -> BatchItem:
    return BatchItem(
        id=row["id"],
        prompt=row["prompt"],
        files=json.loads(row["files"]),
        metadata=json.loads(row["metadata"]),
        source=row["source"],
    )


def _cap(text: str) -> str:
    return text if len(text) <= ATTEMPT_OUTPUT_CAP else text[:ATTEMPT_OUTPUT_CAP]


def _stored_result_json(result: RunResult) -> str:
    """The result as stored in the items row: artifact bytes blanked, since they live in the artifact files."""
    stored = result.to_json()
    for attempt in stored["attempts"]:
        for artifact in attempt["result"]["artifacts"]:
            artifact["data_b64"] = ""  # the bytes live in the artifact files
    return json.dumps(stored)


def _item_result_values(status: str, result: RunResult, rate_limited: int) -> tuple[Any, ...]:
    """The items row's result columns, in the order ``BatchStore.finish`` updates them."""
    usage = result.usage
    return (
        status,
        result.status.value,
        result.error,
        _stored_result_json(result),
        time.time(),
        rate_limited,
        result.wall_time_s,
        result.model_time_s,
        result.execution_time_s,
        len(result.attempts),
        result.retries,
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
        usage.requests,
        usage.cost_usd,
    )


def _attempt_rows(item_id: str, result: RunResult) -> list[tuple[Any, ...]]:
    """One attempts row per attempt, outputs capped at ATTEMPT_OUTPUT_CAP (a cap counts as truncation)."""
    return [
        (
            item_id,
            i,
            a.step,
            int(a.remote),
            a.code,
            a.result.outcome.value,
            _cap(a.result.stdout),
            _cap(a.result.stderr),
            int(a.result.stdout_truncated or len(a.result.stdout) > ATTEMPT_OUTPUT_CAP),
            int(a.result.stderr_truncated or len(a.result.stderr) > ATTEMPT_OUTPUT_CAP),
            a.result.error_type,
            a.result.error_message,
            a.result.exit_code,
            a.result.duration_s,
            a.result.cpu_time_s,
            a.result.peak_memory_bytes,
        )
        for i, a in enumerate(result.attempts)
    ]


def item_status_for(result: RunResult) -> str:
    """``error`` when the run could not complete (the model failed: re-run on
    resume); ``done`` when it reached an answer, solved or not."""
    return ERROR if result.error else DONE


class BatchStore(MigratedStore):
    """The single writer of one run directory's database and artifacts.

    ``durability="normal"`` survives any process crash (``kill -9``);
    ``"full"`` also survives power loss at the cost of an fsync per commit.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True, durability: str = "normal") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        self.artifacts_dir = self.run_dir / ARTIFACTS_DIR
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', got {durability!r}")
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.run_dir} holds no batch (no {DB_NAME})")
            self.run_dir.mkdir(parents=True, exist_ok=True)
        # One BEGIN/COMMIT per state change. check_same_thread=False: the batch driver hands the store
        # to one writer thread (so a slow fsync never stalls the event loop); one thread uses it at a time.
        try:
            self._db = open_migrated(
                self.path, "batch", BATCH_MIGRATIONS, synchronous=durability.upper(), check_same_thread=False
            )
        except MigrationError as exc:
            raise StoreError(str(exc)) from exc

    # -- plumbing -----------------------------------------------------------

    class _Tx:
        """A transaction, or a savepoint inside the group transaction of :meth:`group`:
        either way one state change applies wholly or not at all."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db
            self.nested = False

        def __enter__(self) -> sqlite3.Connection:
            self.nested = self.db.in_transaction
            self.db.execute("SAVEPOINT change" if self.nested else "BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            if not self.nested:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            elif exc_type:
                self.db.execute("ROLLBACK TO change")
                self.db.execute("RELEASE change")
            else:
                self.db.execute("RELEASE change")

    def _transaction(self) -> BatchStore._Tx:
        return BatchStore._Tx(self._db)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Commit several state changes at once (group commit). Each change
        still applies wholly or not at all (a savepoint); a crash before the
        commit loses the whole group, and nobody has been told it was stored."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def journal_settings(self) -> dict[str, Any]:
        """The connection's journal mode and sync level, as SQLite reports them."""
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        level = self._db.execute("PRAGMA synchronous").fetchone()[0]
        return {"journal_mode": mode, "synchronous": {0: "off", 1: "normal", 2: "full", 3: "extra"}[level]}

    # -- the batch and its settings ------------------------------------------

    def settings(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT settings FROM batch WHERE id = 1").fetchone()
        return json.loads(row["settings"]) if row else None

    def initialise(self, settings: dict[str, Any], items: Sequence[BatchItem]) -> None:
        """Record a new batch and all its items (pending) in one transaction."""
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM batch WHERE id = 1").fetchone():
                raise StoreError(f"{self.run_dir} already holds a batch")
            db.execute(
                "INSERT INTO batch (id, schema_version, settings, created, updated) VALUES (1, ?, ?, ?, ?)",
                (SCHEMA_VERSION, json.dumps(settings, sort_keys=True), now, now),
            )
            self._insert_items(db, items, start_seq=0)

    def replace_settings(self, settings: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE batch SET settings = ?, updated = ? WHERE id = 1",
                (json.dumps(settings, sort_keys=True), time.time()),
            )

    def add_items(self, items: Sequence[BatchItem]) -> int:
        """Add items whose ids are new; returns how many were added."""
        with self._transaction() as db:
            known = {r[0] for r in db.execute("SELECT id FROM items")}
            fresh = [item for item in items if item.id not in known]
            start = db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM items").fetchone()[0]
            self._insert_items(db, fresh, start_seq=start)
        return len(fresh)

    def reset_items(self, items: Sequence[BatchItem]) -> None:
        """Replace the prompt/files/metadata of existing items and make them pending again."""
        with self._transaction() as db:
            for item in items:
                self._clear_outputs(db, item.id)
                db.execute(
                    "UPDATE items SET prompt = ?, files = ?, metadata = ?, source = ?, status = 'pending', "
                    "run_status = NULL, error = NULL, result = NULL WHERE id = ?",
                    (item.prompt, json.dumps(item.files), json.dumps(item.metadata), item.source, item.id),
                )

    @staticmethod
    def _insert_items(db: sqlite3.Connection, items: Sequence[BatchItem], *, start_seq: int) -> None:
        db.executemany(
            "INSERT INTO items (seq, id, prompt, files, metadata, source, status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            [
                (start_seq + i, item.id, item.prompt, json.dumps(item.files), json.dumps(item.metadata), item.source)
                for i, item in enumerate(items)
            ],
        )

    # -- sessions -------------------------------------------------------------

    def begin_session(self, settings: dict[str, Any]) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO sessions (settings, started) VALUES (?, ?)",
                (json.dumps(settings, sort_keys=True), time.time()),
            )
            assert cursor.lastrowid is not None  # set by the INSERT
            return cursor.lastrowid

    def end_session(self, session: int, reason: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE sessions SET ended = ?, end_reason = ? WHERE id = ?", (time.time(), reason, session))

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM sessions ORDER BY id")]

    # -- item state -------------------------------------------------------------

    def recover_in_flight(self) -> list[str]:
        """Items left ``running`` by a process that died: pending again. Returns their ids."""
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM items WHERE status = 'running' ORDER BY seq")]
            db.execute(
                "UPDATE items SET status = 'pending', interruptions = interruptions + 1 WHERE status = 'running'"
            )
        return ids

    def runnable_ids(self, *, rerun_errors: bool = True) -> list[str]:
        """Items still to run, in input order: pending, and errored ones unless told not to."""
        return [item.id for item in self.runnable_items(rerun_errors=rerun_errors)]

    def runnable_items(self, *, rerun_errors: bool = True) -> list[BatchItem]:
        """Like :meth:`runnable_ids`, with the items themselves (one query, not one per item)."""
        statuses = ("pending", "error") if rerun_errors else ("pending",)
        marks = ", ".join("?" * len(statuses))
        return [
            _batch_item(r)
            for r in self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE status IN ({marks}) ORDER BY seq", statuses
            )
        ]

    def item(self, item_id: str) -> BatchItem:
        row = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise KeyError(item_id)
        return _batch_item(row)

    def items(self) -> list[BatchItem]:
        return [_batch_item(r) for r in self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY seq")]

    def mark_running(self, item_id: str, session: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE items SET status = 'running', starts = starts + 1, session = ?, started = ? WHERE id = ?",
                (session, time.time(), item_id),
            )

    def mark_interrupted(self, item_ids: Iterable[str]) -> None:
        """Ctrl-C: in-flight items become pending again, counted as interrupted."""
        ids = list(item_ids)
        with self._transaction() as db:
            db.executemany(
                "UPDATE items SET status = 'pending', interruptions = interruptions + 1 "
                "WHERE id = ? AND status = 'running'",
                [(i,) for i in ids],
            )

    def finish(self, item_id: str, result: RunResult, *, rate_limited: int = 0) -> str:
        """Write an item's result, attempts and artifacts; returns its new status.

        Artifact files are written first (replacing any a killed run left
        behind), then every row in one transaction.
        """
        status = item_status_for(result)
        artifact_rows = self._write_artifacts(item_id, result)
        with self._transaction() as db:
            self._clear_outputs(db, item_id)
            db.execute(
                "UPDATE items SET status = ?, run_status = ?, error = ?, result = ?, finished = ?, rate_limited = ?, "
                "wall_time_s = ?, model_time_s = ?, execution_time_s = ?, executions = ?, retries = ?, "
                "input_tokens = ?, output_tokens = ?, total_tokens = ?, requests = ?, cost_usd = ? WHERE id = ?",
                (*_item_result_values(status, result, rate_limited), item_id),
            )
            db.executemany(
                "INSERT INTO attempts (item_id, idx, step, remote, code, outcome, stdout, stderr, stdout_truncated, "
                "stderr_truncated, error_type, error_message, exit_code, duration_s, cpu_time_s, peak_memory_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _attempt_rows(item_id, result),
            )
            db.executemany(
                "INSERT INTO artifacts (item_id, attempt_idx, idx, name, mime_type, size, truncated, path) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                artifact_rows,
            )
        return status

    @staticmethod
    def _clear_outputs(db: sqlite3.Connection, item_id: str) -> None:
        db.execute("DELETE FROM attempts WHERE item_id = ?", (item_id,))
        db.execute("DELETE FROM artifacts WHERE item_id = ?", (item_id,))

    def _write_artifacts(self, item_id: str, result: RunResult) -> list[tuple[Any, ...]]:
        directory = self.artifacts_dir / item_id
        if directory.exists():
            shutil.rmtree(directory)
        rows: list[tuple[Any, ...]] = []
        used: set[str] = set()
        for attempt_idx, attempt in enumerate(result.attempts):
            for idx, artifact in enumerate(attempt.result.artifacts):
                base = Path(artifact.name).name or f"artifact-{idx}"
                name, n = base, 0
                while name in used:  # the same file name from several attempts (or sub-directories)
                    n += 1
                    name = f"attempt{attempt_idx}-{base}" if n == 1 else f"attempt{attempt_idx}-{n}-{base}"
                used.add(name)
                relative = f"{ARTIFACTS_DIR}/{item_id}/{name}"
                if not artifact.truncated:
                    directory.mkdir(parents=True, exist_ok=True)
                    (self.run_dir / relative).write_bytes(artifact.data)
                rows.append(
                    (
                        item_id,
                        attempt_idx,
                        idx,
                        artifact.name,
                        artifact.mime_type,
                        artifact.size,
                        int(artifact.truncated),
                        relative,
                    )
                )
        return rows

    # -- reading ------------------------------------------------------------------

    def result_json(self, item_id: str) -> dict[str, Any] | None:
        """The stored result JSON as written: artifact entries carry metadata but no bytes."""
        row = self._db.execute("SELECT result FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise KeyError(item_id)
        return None if row["result"] is None else json.loads(row["result"])

    def result(self, item_id: str) -> RunResult | None:
        """The stored result with artifact bytes read back from their files."""
        data = self.result_json(item_id)
        if data is None:
            return None
        paths = {
            (r["attempt_idx"], r["idx"]): r["path"]
            for r in self._db.execute(
                "SELECT attempt_idx, idx, path, truncated FROM artifacts WHERE item_id = ?", (item_id,)
            )
            if not r["truncated"]
        }
        result = RunResult.from_json(data)
        for attempt_idx, attempt in enumerate(result.attempts):
            artifacts: list[Artifact] = []
            for idx, artifact in enumerate(attempt.result.artifacts):
                path = paths.get((attempt_idx, idx))
                if path is not None:
                    artifact = Artifact(
                        name=artifact.name,
                        data=(self.run_dir / path).read_bytes(),
                        mime_type=artifact.mime_type,
                        truncated=artifact.truncated,
                    )
                artifacts.append(artifact)
            attempt.result.artifacts = artifacts
        return result

    def records(self) -> Iterator[ItemRecord]:
        for row in self._db.execute(f"SELECT {_RECORD_COLUMNS} FROM items ORDER BY seq"):
            data = dict(row)
            data["files"] = json.loads(data["files"])
            data["metadata"] = json.loads(data["metadata"])
            yield ItemRecord(**data)

    def attempt_rows(self, item_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM attempts" + (" WHERE item_id = ?" if item_id else "") + " ORDER BY item_id, idx"
        return [dict(r) for r in self._db.execute(query, (item_id,) if item_id else ())]

    def artifact_rows(self, item_id: str | None = None) -> list[dict[str, Any]]:
        query = (
            "SELECT * FROM artifacts"
            + (" WHERE item_id = ?" if item_id else "")
            + " ORDER BY item_id, attempt_idx, idx"
        )
        return [dict(r) for r in self._db.execute(query, (item_id,) if item_id else ())]

    def counts(self) -> dict[str, int]:
        """Items by store status, plus ``solved``/``failed``/``answered_without_code`` among finished ones."""
        counts = {PENDING: 0, RUNNING: 0, DONE: 0, ERROR: 0, "total": 0}
        counts.update({s.value: 0 for s in RunStatus})
        for row in self._db.execute("SELECT status, run_status, COUNT(*) AS n FROM items GROUP BY status, run_status"):
            counts[row["status"]] += row["n"]
            counts["total"] += row["n"]
            if row["status"] == DONE and row["run_status"]:
                counts[row["run_status"]] += row["n"]
        return counts
