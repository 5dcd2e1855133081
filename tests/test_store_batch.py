"""The batch store: transactions, round-trips, resume bookkeeping, settings checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from executors.base import Artifact, ExecutionResult, Outcome
from orchestrator.batch import BatchItem, BatchSettings, BatchStore, StoreError
from orchestrator.batch.runner import open_batch
from orchestrator.config import LoopConfig
from orchestrator.types import Attempt, RunResult, RunStatus, Usage


def make_result(item_id: str, *, status: RunStatus = RunStatus.SOLVED, error: str | None = None) -> RunResult:
    first = Attempt(
        code="1/0",
        step=0,
        result=ExecutionResult(
            outcome=Outcome.FAILED,
            stderr="ZeroDivisionError",
            error_type="ZeroDivisionError",
            artifacts=[Artifact.of("plot.png", b"\x89PNG first")],
        ),
    )
    second = Attempt(
        code="print(2)",
        step=1,
        result=ExecutionResult(
            outcome=Outcome.OK,
            stdout="2\n" * 20000,
            artifacts=[
                Artifact.of("plot.png", b"\x89PNG second"),
                Artifact.of("out.csv", b"a,b\n"),
                Artifact.of("sub/out.csv", b"c\n"),
            ],
        ),
    )
    return RunResult(
        prompt=f"prompt {item_id}",
        summary="two",
        status=status,
        attempts=[first, second],
        usage=Usage(input_tokens=10, output_tokens=5, requests=3, cost_usd=0.01),
        wall_time_s=1.5,
        model_time_s=1.0,
        execution_time_s=0.4,
        run_id=item_id,
        model="m",
        executor="e",
        error=error,
    )


def items(n: int) -> list[BatchItem]:
    return [BatchItem(id=f"i{k}", prompt=f"prompt {k}", source=f"items[{k}]") for k in range(n)]


SETTINGS = BatchSettings(model="scripted", config=LoopConfig(executor="local"))


def test_finish_round_trips_the_result_with_artifact_bytes_from_files(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        store.initialise(SETTINGS.to_json(), items(2))
        session = store.begin_session(SETTINGS.to_json())
        store.mark_running("i0", session)
        result = make_result("i0")
        assert store.finish("i0", result) == "done"
        assert store.result("i0") == result
        assert store.result("i1") is None
        # Same-named artifacts from two attempts both survive on disk.
        paths = sorted(row["path"] for row in store.artifact_rows("i0"))
        assert paths == [
            "artifacts/i0/attempt1-out.csv",
            "artifacts/i0/attempt1-plot.png",
            "artifacts/i0/out.csv",
            "artifacts/i0/plot.png",
        ]
        assert (tmp_path / "artifacts/i0/attempt1-out.csv").read_bytes() == b"c\n"
        assert (tmp_path / "artifacts/i0/plot.png").read_bytes() == b"\x89PNG first"
        attempts = store.attempt_rows("i0")
        assert [a["outcome"] for a in attempts] == ["FAILED", "OK"]
        assert attempts[1]["stdout_truncated"] == 1 and len(attempts[1]["stdout"]) == 16 * 1024
        record = next(store.records())
        assert (record.status, record.run_status, record.retries, record.executions, record.total_tokens) == (
            "done",
            "solved",
            1,
            2,
            15,
        )


def test_a_model_error_is_stored_as_error_and_runnable_again(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        store.initialise(SETTINGS.to_json(), items(3))
        session = store.begin_session(SETTINGS.to_json())
        for item_id in ("i0", "i1"):
            store.mark_running(item_id, session)
        store.finish("i0", make_result("i0", status=RunStatus.FAILED, error="ModelError: 500"))
        store.finish("i1", make_result("i1", status=RunStatus.FAILED))
        assert store.runnable_ids() == ["i0", "i2"]
        assert store.runnable_ids(rerun_errors=False) == ["i2"]
        counts = store.counts()
        assert (counts["done"], counts["error"], counts["pending"], counts["failed"]) == (1, 1, 1, 1)


def test_rerunning_an_item_replaces_its_attempts_and_artifacts(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        store.initialise(SETTINGS.to_json(), items(1))
        session = store.begin_session(SETTINGS.to_json())
        store.mark_running("i0", session)
        store.finish("i0", make_result("i0", error="boom"))
        store.mark_running("i0", session)
        store.finish("i0", RunResult(prompt="p", summary="s", status=RunStatus.ANSWERED_WITHOUT_CODE, run_id="i0"))
        assert store.attempt_rows("i0") == [] and store.artifact_rows("i0") == []
        assert not (tmp_path / "artifacts" / "i0").exists()
        assert next(store.records()).starts == 2


def test_items_left_running_by_a_dead_process_become_pending(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        store.initialise(SETTINGS.to_json(), items(3))
        session = store.begin_session(SETTINGS.to_json())
        store.mark_running("i1", session)
    # A new process opens the store: no Ctrl-C handler ran, i1 is still "running".
    with BatchStore(tmp_path) as store:
        assert store.recover_in_flight() == ["i1"]
        assert store.runnable_ids() == ["i0", "i1", "i2"]
        assert [r.interruptions for r in store.records()] == [0, 1, 0]


def test_the_store_uses_wal_and_survives_an_uncommitted_writer(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        store.initialise(SETTINGS.to_json(), items(2))
    raw = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("UPDATE items SET status = 'done' WHERE id = 'i0'")
    raw.close()  # gone without COMMIT, as a killed process would be
    with BatchStore(tmp_path) as store:
        assert store.runnable_ids() == ["i0", "i1"]
        assert store.counts()["done"] == 0


def test_open_batch_refuses_an_existing_batch_without_resume(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        open_batch(store, SETTINGS, items(2), resume=False, force=False)
        with pytest.raises(StoreError, match=r"already holds a batch .*pass --resume"):
            open_batch(store, SETTINGS, items(2), resume=False, force=False)


def test_resume_refuses_different_settings_unless_forced(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        open_batch(store, SETTINGS, items(2), resume=False, force=False)
        other = BatchSettings(model="other", config=LoopConfig(executor="local", max_retries=2), concurrency=99)
        with pytest.raises(StoreError) as info:
            open_batch(store, other, items(2), resume=True, force=False)
        message = str(info.value)
        assert "model: stored 'scripted', now 'other'" in message and "max_retries: stored 5, now 2" in message
        assert "concurrency" not in message  # how fast it runs may change freely
        assert "--force" in message
        open_batch(store, other, items(2), resume=True, force=True)
        assert store.settings()["model"] == "other"


def test_resume_adds_new_items_and_flags_changed_ones(tmp_path: Path) -> None:
    with BatchStore(tmp_path) as store:
        open_batch(store, SETTINGS, items(2), resume=False, force=False)
        session = store.begin_session(SETTINGS.to_json())
        store.mark_running("i0", session)
        store.finish("i0", make_result("i0"))
        changed = items(3)
        changed[0] = BatchItem(id="i0", prompt="a new prompt")
        with pytest.raises(StoreError, match="item 'i0': prompt, files or metadata differ"):
            open_batch(store, SETTINGS, changed, resume=True, force=False)
        open_batch(store, SETTINGS, items(3), resume=True, force=False)
        assert store.runnable_ids() == ["i1", "i2"]  # i0 finished, i2 new
        open_batch(store, SETTINGS, changed, resume=True, force=True)
        assert store.runnable_ids() == ["i0", "i1", "i2"]
        assert store.item("i0").prompt == "a new prompt"


def test_resume_without_items_uses_the_stored_ones_and_fresh_dirs_need_items(tmp_path: Path) -> None:
    with BatchStore(tmp_path / "a") as store, pytest.raises(StoreError, match="holds no batch to resume"):
        open_batch(store, SETTINGS, None, resume=True, force=False)
    with BatchStore(tmp_path / "b") as store:
        open_batch(store, SETTINGS, items(2), resume=False, force=False)
        open_batch(store, SETTINGS, None, resume=True, force=False)
        assert store.runnable_ids() == ["i0", "i1"]


def test_opening_a_directory_without_a_store_for_reading_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="holds no batch"):
        BatchStore(tmp_path, create=False)


async def test_writer_groups_changes_and_a_failing_one_does_not_undo_the_others(tmp_path: Path) -> None:
    import asyncio
    import time

    from orchestrator.batch.writer import StoreWriter

    with BatchStore(tmp_path) as store:
        store.initialise(SETTINGS.to_json(), items(3))
        session = store.begin_session(SETTINGS.to_json())
        writer = StoreWriter(store, asyncio.get_running_loop())
        blocker = writer.submit(time.sleep, 0.05)  # the next changes queue up behind it: one group
        changes = [
            writer.submit(store.mark_running, "i0", session),
            writer.submit(store.initialise, SETTINGS.to_json(), items(1)),  # fails: a batch exists
            writer.submit(store.finish, "i0", make_result("i0")),
            writer.submit(store.mark_running, "i1", session),
        ]
        results = await asyncio.gather(blocker, *changes, return_exceptions=True)
        writer.close()
        assert isinstance(results[2], StoreError) and results[3] == "done"
        assert [r.status for r in store.records()] == ["done", "running", "pending"]


def test_durability_full_syncs_every_commit_and_other_values_are_refused(tmp_path: Path) -> None:
    with BatchStore(tmp_path / "full", durability="full") as store:
        assert store.journal_settings() == {"journal_mode": "wal", "synchronous": "full"}
    with BatchStore(tmp_path / "normal") as store:
        assert store.journal_settings() == {"journal_mode": "wal", "synchronous": "normal"}
    with pytest.raises(ValueError, match="durability must be 'normal' or 'full'"):
        BatchStore(tmp_path / "x", durability="fast")
