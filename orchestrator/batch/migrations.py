"""Numbered schema migrations for the run directory's database (``runs.db``).

Each component (the batch store, the benchmark's score tables) keeps an
ordered list of ``(name, function)``. Opening a database applies, in order,
every migration not yet recorded in its ``_migrations`` table, each in its own
transaction with its record, as simonw/llm does. A database made before
migrations were recorded is brought up the same way: every migration is
written to be a no-op on a database that already has its change. A database
that records a migration this codeloop does not know was written by a newer
codeloop and is refused, rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

Migration = tuple[str, Callable[[sqlite3.Connection], None]]


class MigrationError(RuntimeError):
    """The database was written by a newer codeloop, or a migration failed."""


def open_migrated(
    path: Path,
    component: str,
    migrations: Sequence[Migration],
    *,
    synchronous: str = "NORMAL",
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """``runs.db`` at ``path`` as every store uses it, brought up to date by ``component``'s ``migrations``:
    autocommit (stores issue BEGIN/COMMIT themselves), rows by name, WAL, foreign keys enforced.
    ``synchronous`` is SQLite's fsync level (NORMAL or FULL). On MigrationError it is closed first."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=check_same_thread)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA foreign_keys=ON")
    try:
        migrate(db, component, migrations, path=path)
    except MigrationError:
        db.close()
        raise
    return db


class MigratedStore:
    """Base of the stores kept in ``runs.db``: holds the connection, closes it on leaving ``with``."""

    _db: sqlite3.Connection

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def migrate(db: sqlite3.Connection, component: str, migrations: Sequence[Migration], *, path: object = "") -> list[str]:
    """Apply ``component``'s migrations that ``db`` lacks; returns their names.
    ``db`` must be in autocommit mode (``isolation_level=None``)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (component TEXT NOT NULL, name TEXT NOT NULL, "
        "applied REAL NOT NULL, PRIMARY KEY (component, name))"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations WHERE component = ?", (component,))}
    unknown = sorted(done - {name for name, _ in migrations})
    if unknown:
        raise MigrationError(
            f"{path or 'the database'} was written by a newer codeloop ({component} migration "
            f"{', '.join(unknown)} is unknown here); upgrade codeloop to read it"
        )
    applied = []
    for name, apply in migrations:
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            apply(db)
            db.execute(
                "INSERT INTO _migrations (component, name, applied) VALUES (?, ?, ?)", (component, name, time.time())
            )
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise MigrationError(f"{path or 'the database'}: {component} migration {name} failed: {exc}") from exc
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied


# -- the batch store's migrations ----------------------------------------------

INITIAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    settings TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    settings TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER NOT NULL,
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    files TEXT NOT NULL,
    metadata TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'error')),
    run_status TEXT,
    error TEXT,
    result TEXT,
    starts INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    session INTEGER,
    started REAL,
    finished REAL,
    wall_time_s REAL,
    model_time_s REAL,
    execution_time_s REAL,
    executions INTEGER,
    retries INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    total_tokens INTEGER,
    requests INTEGER,
    cost_usd REAL
);
CREATE INDEX IF NOT EXISTS items_by_status ON items (status, seq);
CREATE TABLE IF NOT EXISTS attempts (
    item_id TEXT NOT NULL REFERENCES items (id),
    idx INTEGER NOT NULL,
    step INTEGER NOT NULL,
    remote INTEGER NOT NULL,
    code TEXT NOT NULL,
    outcome TEXT NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    stdout_truncated INTEGER NOT NULL,
    stderr_truncated INTEGER NOT NULL,
    error_type TEXT,
    error_message TEXT,
    exit_code INTEGER,
    duration_s REAL,
    cpu_time_s REAL,
    peak_memory_bytes INTEGER,
    PRIMARY KEY (item_id, idx)
);
CREATE TABLE IF NOT EXISTS artifacts (
    item_id TEXT NOT NULL REFERENCES items (id),
    attempt_idx INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (item_id, attempt_idx, idx)
);
"""


def m001_initial(db: sqlite3.Connection) -> None:
    """The tables of schema version 1."""
    for statement in INITIAL_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


# The settings that schema version 1 kept flat beside the model's name.
_V1_LOOP_SETTINGS = ("executor", "executor_options", "max_retries", "max_steps", "limits", "tools", "require_code")


def nest_loop_settings(settings: dict) -> dict:
    """Version 1's flat settings with the loop's ones under ``config`` (a LoopConfig's JSON)."""
    if "config" in settings:
        return settings
    config = {key: settings[key] for key in _V1_LOOP_SETTINGS if key in settings}
    rest = {key: value for key, value in settings.items() if key not in _V1_LOOP_SETTINGS}
    return {**rest, "config": config}


def m002_loop_config(db: sqlite3.Connection) -> None:
    """Settings hold the whole LoopConfig (prompts, context, generation options...)."""
    for table in ("batch", "sessions"):
        for row_id, text in db.execute(f"SELECT id, settings FROM {table}").fetchall():
            nested = nest_loop_settings(json.loads(text))
            db.execute(f"UPDATE {table} SET settings = ? WHERE id = ?", (json.dumps(nested, sort_keys=True), row_id))
    db.execute("UPDATE batch SET schema_version = 2")


BATCH_MIGRATIONS: list[Migration] = [
    ("001_initial", m001_initial),
    ("002_loop_config", m002_loop_config),
]
