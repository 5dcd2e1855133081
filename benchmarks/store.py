"""The benchmark's own rows in the batch store (``BENCH_DIR/runs.db``).

Runs live in the batch runner's ``items`` table; this module adds two tables
beside it: ``bench`` (what was benchmarked, so a resume can refuse a
different data set) and ``bench_scores`` (one score per item). Keeping them
in the same database means a report is always computed from one file, and
a resumed benchmark scores exactly the items that still lack a score.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from orchestrator.batch.migrations import (
    MigratedStore,
    Migration,
    MigrationError,
    open_migrated,
)
from orchestrator.batch.store import DB_NAME, BatchStore

from .metrics import ScoredRun
from .scoring import Score

INITIAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    config TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_scores (
    item_id TEXT PRIMARY KEY,
    correct INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    expected TEXT,
    got TEXT,
    detail TEXT NOT NULL,
    scoring_time_s REAL NOT NULL,
    scored REAL NOT NULL
);
"""


def m001_initial(db: sqlite3.Connection) -> None:
    for statement in INITIAL_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def m002_solved_at(db: sqlite3.Connection) -> None:
    """Per-attempt scoring: the attempt an item was first solved at. Scores stored before it read
    NULL there, so those items are off the refinement curve (scored again in a new BENCH_DIR)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(bench_scores)")}
    if "solved_at" not in columns:  # stores made before migrations were recorded may have it already
        db.execute("ALTER TABLE bench_scores ADD COLUMN solved_at INTEGER")


BENCH_MIGRATIONS: list[Migration] = [("001_initial", m001_initial), ("002_solved_at", m002_solved_at)]


class BenchStoreError(RuntimeError):
    """The bench directory holds a different benchmark, or no benchmark at all."""


class ScoreStore(MigratedStore):
    """Reads and writes the bench tables. Every write is its own short
    transaction, so it interleaves safely with the batch store's writes."""

    def __init__(self, bench_dir: str | Path, *, create: bool = True) -> None:
        self.bench_dir = Path(bench_dir)
        self.path = self.bench_dir / DB_NAME
        if not self.path.exists() and not create:
            raise BenchStoreError(f"{self.bench_dir} holds no benchmark (no {DB_NAME})")
        self.bench_dir.mkdir(parents=True, exist_ok=True)
        # Scores are saved on the event loop, one commit each: no fsync per commit (as the batch store's
        # default). A crash still cannot corrupt them, and a score lost to power loss is redone on resume.
        try:
            self._db = open_migrated(self.path, "bench", BENCH_MIGRATIONS, synchronous="NORMAL")
        except MigrationError as exc:
            raise BenchStoreError(str(exc)) from exc

    def config(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT config FROM bench WHERE id = 1").fetchone()
        return json.loads(row["config"]) if row else None

    def set_config(self, config: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO bench (id, config, created) VALUES (1, ?, ?)",
            (json.dumps(config, sort_keys=True), time.time()),
        )

    def restore_config(self, config: dict[str, Any] | None) -> None:
        """Put back the config read before :meth:`set_config` (None: there was none)."""
        if config is None:
            self._db.execute("DELETE FROM bench WHERE id = 1")
        else:
            self.set_config(config)

    def save(self, score: Score, retries: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO bench_scores (item_id, correct, retries, expected, got, detail, scoring_time_s, "
            "scored, solved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                score.item_id,
                int(score.correct),
                retries,
                score.expected,
                score.got,
                score.detail,
                score.scoring_time_s,
                time.time(),
                score.solved_at,
            ),
        )

    def scores(self) -> dict[str, Score]:
        return {
            r["item_id"]: Score(
                item_id=r["item_id"],
                correct=bool(r["correct"]),
                expected=r["expected"],
                got=r["got"],
                detail=r["detail"],
                scoring_time_s=r["scoring_time_s"],
                solved_at=r["solved_at"],
            )
            for r in self._db.execute("SELECT * FROM bench_scores")
        }


def load_scored_runs(bench_dir: str | Path) -> list[ScoredRun]:
    """Every finished, scored item of a bench directory, in input order."""
    with ScoreStore(bench_dir, create=False) as scores_db:  # raises when there is no benchmark
        scores = scores_db.scores()
    with BatchStore(bench_dir, create=False) as store:
        records = []
        for record in store.records():
            score = scores.get(record.id)
            if score is None:
                continue
            result = store.result(record.id)
            if result is not None:
                records.append(ScoredRun(item_id=record.id, run=result, score=score))
        return records
