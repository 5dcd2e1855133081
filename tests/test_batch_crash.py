"""A real ``kill -9`` (and a real Ctrl-C) of a batch process, then resume:
every item ends up stored exactly once and finished items are never re-run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from executors.base import ExecutionResult, Outcome
from executors.testing import FunctionExecutor, returning
from orchestrator.batch import BatchStore, run_batch_sync

ITEMS = 80

# The batch process: a scripted model double that logs each call's prompt to
# a file (line-buffered, so a kill -9 loses no logged call) and an instant
# executor double, so the only slow part is the simulated model latency.
CHILD = """
import asyncio, sys
from orchestrator.batch import run_batch_sync
from orchestrator.logs import configure_logging
from orchestrator.models.scripted import ScriptedModel
from executors.base import ExecutionResult, Outcome

class CallLogModelDouble:
    name = "call-log-double"
    def __init__(self, log_path, latency_s):
        self.inner = ScriptedModel(["```python\\nprint(1)\\n```", "one"], latency_s=latency_s)
        self.log = open(log_path, "a", buffering=1)
    async def generate(self, conversation, tools=()):
        self.log.write(conversation.first_prompt + "\\n")
        return await self.inner.generate(conversation, tools)

class InstantExecutorDouble:
    name = "instant-double"
    stateful = False
    async def execute(self, code, *, files=(), limits=None, session=None):
        return ExecutionResult(outcome=Outcome.OK, stdout="1\\n")
    async def reset(self, session=None): pass
    async def aclose(self): pass

configure_logging(json_lines=False, level="error")
prompts_path, run_dir, log_path = sys.argv[1:4]
run_batch_sync(prompts_path, model=CallLogModelDouble(log_path, 0.05), executor=InstantExecutorDouble(),
               run_dir=run_dir, concurrency=4)
"""


class CallLogModelDouble:
    """The same double, in this process, for the resume."""

    name = "call-log-double"

    def __init__(self, log: list[str]) -> None:
        from orchestrator.models.scripted import ScriptedModel

        self.inner = ScriptedModel(["```python\nprint(1)\n```", "one"])
        self.log = log

    async def generate(self, conversation, tools=()):
        self.log.append(conversation.first_prompt)
        return await self.inner.generate(conversation, tools)


def InstantExecutorDouble() -> FunctionExecutor:
    """Test double: answers every execution OK at once."""
    return FunctionExecutor(returning(ExecutionResult(outcome=Outcome.OK, stdout="1\n")), name="instant-double")


def start_batch(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path, Path]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {k}\n" for k in range(ITEMS)))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_dir, log = tmp_path / "run", tmp_path / "calls.log"
    child = subprocess.Popen(
        [sys.executable, str(script), str(prompts), str(run_dir), str(log)],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
    )
    return child, prompts, run_dir, log


def wait_for_done(run_dir: Path, child: subprocess.Popen, at_least: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read().decode()
        if (run_dir / "runs.db").exists():
            db = sqlite3.connect(f"file:{run_dir / 'runs.db'}?mode=ro", uri=True, timeout=5)
            try:
                done = db.execute("SELECT COUNT(*) FROM items WHERE status = 'done'").fetchone()[0]
            except sqlite3.OperationalError:  # the schema is still being created
                done = 0
            finally:
                db.close()
            if done >= at_least:
                return
        time.sleep(0.02)
    raise AssertionError(f"the batch did not finish {at_least} items in {timeout_s} s")


def check_resume(prompts: Path, run_dir: Path, first_log: list[str]) -> None:
    with BatchStore(run_dir) as store:
        finished_before = {store.item(r.id).prompt for r in store.records() if r.status == "done"}
    # Each item finished before the crash was asked exactly its two turns.
    first_calls = Counter(first_log)
    assert all(first_calls[prompt] == 2 for prompt in finished_before)

    resume_log: list[str] = []
    pairs = run_batch_sync(
        prompts,
        model=CallLogModelDouble(resume_log),
        executor=InstantExecutorDouble(),
        run_dir=run_dir,
        concurrency=8,
        resume=True,
    )
    resumed_calls = Counter(resume_log)
    assert finished_before.isdisjoint(resumed_calls)  # finished items were not re-run
    assert set(resumed_calls.values()) == {2}
    assert len(pairs) == ITEMS - len(finished_before) == len(resumed_calls)
    with BatchStore(run_dir) as store:
        records = list(store.records())
        assert len(records) == ITEMS and {r.status for r in records} == {"done"}
        assert len(store.attempt_rows()) == ITEMS  # exactly one attempt row per item: no duplicates
        assert {r.run_status for r in records} == {"solved"}


def test_kill_9_mid_batch_then_resume_runs_each_item_exactly_once(tmp_path: Path) -> None:
    child, prompts, run_dir, log = start_batch(tmp_path)
    try:
        wait_for_done(run_dir, child, at_least=15)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with BatchStore(run_dir) as store:
        counts = store.counts()
    assert counts["running"] > 0  # the in-flight items were lost with the process...
    assert 15 <= counts["done"] < ITEMS
    check_resume(prompts, run_dir, log.read_text().splitlines())
    with BatchStore(run_dir) as store:
        assert sum(r.interruptions for r in store.records()) == counts["running"]  # ...and re-run on resume
        assert [s["end_reason"] for s in store.sessions()] == [None, "completed"]  # the killed session never ended


def test_ctrl_c_marks_in_flight_items_pending_then_resume_finishes(tmp_path: Path) -> None:
    child, prompts, run_dir, log = start_batch(tmp_path)
    try:
        wait_for_done(run_dir, child, at_least=10)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert b"KeyboardInterrupt" in child.stderr.read()
    with BatchStore(run_dir) as store:
        counts = store.counts()
        assert counts["running"] == 0 and counts["pending"] > 0
        assert store.sessions()[0]["end_reason"] == "interrupted"
        assert all(r.status == "pending" for r in store.records() if r.interruptions)
    check_resume(prompts, run_dir, log.read_text().splitlines())
