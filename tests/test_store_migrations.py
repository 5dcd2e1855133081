"""Numbered store migrations: a run directory made by an older codeloop opens,
is brought up to date in order, and resumes with the settings it started with;
one written by a newer codeloop is refused with a clear error."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from benchmarks.store import BenchStoreError, ScoreStore
from orchestrator.batch import BatchStore, StoreError, run_batch
from orchestrator.batch.migrations import BATCH_MIGRATIONS, m001_initial
from orchestrator.batch.settings import BatchSettings
from orchestrator.config import LoopConfig
from orchestrator.models.scripted import ScriptedModel

# What schema version 1 stored: the loop's settings flat beside the model.
V1_SETTINGS = {
    "model": "scripted",
    "executor": "local",
    "executor_options": {},
    "max_retries": 2,
    "max_steps": 4,
    "limits": {"timeout_s": 9.0, "memory_bytes": 1073741824},
    "tools": "off",
    "require_code": "auto",
    "concurrency": 2,
    "execution_concurrency": 2,
    "engine": "local",
}


def make_v1_store(run_dir: Path) -> None:
    """A runs.db as codeloop wrote it before migrations were recorded: the
    version 1 tables, a flat settings row, one finished and one pending item."""
    run_dir.mkdir(parents=True)
    db = sqlite3.connect(run_dir / "runs.db", isolation_level=None)
    m001_initial(db)  # the version 1 DDL, verbatim
    now = time.time()
    db.execute("INSERT INTO batch VALUES (1, 1, ?, ?, ?)", (json.dumps(V1_SETTINGS), now, now))
    db.execute(
        "INSERT INTO sessions (settings, started, ended, end_reason) VALUES (?, ?, ?, 'interrupted')",
        (json.dumps(V1_SETTINGS), now, now),
    )
    for seq, (item_id, status) in enumerate((("a", "done"), ("b", "pending"))):
        db.execute(
            "INSERT INTO items (seq, id, prompt, files, metadata, source, status) "
            "VALUES (?, ?, ?, '[]', '{}', 'old', ?)",
            (seq, item_id, f"prompt {item_id}", status),
        )
    db.close()


def test_an_old_store_is_migrated_in_order_and_records_its_migrations(tmp_path: Path) -> None:
    make_v1_store(tmp_path / "run")
    with BatchStore(tmp_path / "run", create=False) as store:
        settings = BatchSettings.from_json(store.settings())
        assert settings.model == "scripted" and settings.concurrency == 2
        assert settings.config.max_retries == 2 and settings.config.tools == "off"
        assert settings.config.executor == "local" and settings.config.limits.timeout_s == 9.0
        assert json.loads(store.sessions()[0]["settings"])["config"]["max_steps"] == 4
    db = sqlite3.connect(tmp_path / "run" / "runs.db")
    applied = [r[0] for r in db.execute("SELECT name FROM _migrations WHERE component = 'batch' ORDER BY name")]
    assert applied == [name for name, _ in BATCH_MIGRATIONS]
    assert db.execute("SELECT schema_version FROM batch").fetchone()[0] == len(BATCH_MIGRATIONS)
    db.close()
    with BatchStore(tmp_path / "run", create=False):  # opening again applies nothing twice
        pass


async def test_an_old_store_resumes_with_its_stored_settings(tmp_path: Path, local_executor) -> None:
    make_v1_store(tmp_path / "run")
    model = ScriptedModel(["```python\nprint(1)\n```", "done"], name="scripted")
    resumed = [
        item_id
        async for item_id, _ in run_batch(
            None, model=model, run_dir=tmp_path / "run", resume=True, executor=local_executor
        )
    ]
    assert resumed == ["b"]
    with BatchStore(tmp_path / "run", create=False) as store:
        stored = BatchSettings.from_json(store.settings()).config
    assert stored == LoopConfig.from_json(
        {
            k: V1_SETTINGS[k]
            for k in ("executor", "executor_options", "max_retries", "max_steps", "limits", "tools", "require_code")
        }
    )


@pytest.mark.parametrize(
    ("store_cls", "store_name", "error", "match"),
    [
        (BatchStore, "batch", StoreError, "written by a newer codeloop .*009_from_the_future"),
        (ScoreStore, "bench", BenchStoreError, "newer codeloop .*009_from_the_future"),
    ],
)
def test_a_store_from_a_newer_codeloop_is_refused_clearly(tmp_path: Path, store_cls, store_name, error, match) -> None:
    with store_cls(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    db.execute("INSERT INTO _migrations VALUES (?, '009_from_the_future', 0)", (store_name,))
    db.close()
    with pytest.raises(error, match=match):
        store_cls(tmp_path, create=False)


def test_an_old_bench_store_gains_solved_at(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    db.execute(
        "CREATE TABLE bench (id INTEGER PRIMARY KEY CHECK (id = 1), config TEXT NOT NULL, created REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE bench_scores (item_id TEXT PRIMARY KEY, correct INTEGER NOT NULL, retries INTEGER NOT "
        "NULL, expected TEXT, got TEXT, detail TEXT NOT NULL, scoring_time_s REAL NOT NULL, scored REAL NOT NULL)"
    )
    db.execute("INSERT INTO bench_scores VALUES ('a', 1, 0, '1', '1', 'ok', 0.1, 0)")
    db.close()
    with ScoreStore(tmp_path, create=False) as scores:
        assert scores.scores()["a"].solved_at is None and scores.scores()["a"].correct
