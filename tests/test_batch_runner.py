"""The batch runner: every item stored once, bounded concurrency, shared 429 backoff,
model errors recorded and resumable, cancellation leaves nothing half-written."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from executors.base import ExecutionResult, InputFile, Limits, Outcome
from executors.testing import FunctionExecutor
from orchestrator.batch import BackoffGate, BackoffPolicy, BatchBusyError, BatchStore, run_batch, run_batch_sync
from orchestrator.models.base import ModelError, RateLimitError
from orchestrator.models.scripted import ScriptedModel
from orchestrator.types import Conversation, ModelTurn, RunStatus, ToolSpec

CODE_THEN_ANSWER = ["```python\nprint(6 * 7)\n```", "The answer is 42."]


class InstantExecutorDouble(FunctionExecutor):
    """Test double: 'runs' code instantly and tracks how many ran at once."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(self._answer, name="instant-double")
        self.delay_s = delay_s
        self.running = 0
        self.peak = 0

    @property
    def executions(self) -> int:
        return len(self.calls)

    async def _answer(self, code: str, files: Sequence[InputFile], limits: Limits) -> ExecutionResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            return ExecutionResult(outcome=Outcome.OK, stdout=f"ran {len(code)} chars\n", executor=self.name)
        finally:
            self.running -= 1


class CountingModelDouble:
    """Test double: a ScriptedModel that counts calls per prompt and concurrent calls."""

    def __init__(self, script: list[str] = CODE_THEN_ANSWER, latency_s: float = 0.0) -> None:
        self.inner = ScriptedModel(script, latency_s=latency_s)
        self.name = "counting-double"
        self.per_prompt: Counter[str] = Counter()
        self.running = 0
        self.peak = 0

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        self.per_prompt[conversation.first_prompt] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await self.inner.generate(conversation, tools)
        finally:
            self.running -= 1


async def collect(items, **options) -> list[tuple[str, object]]:
    return [pair async for pair in run_batch(items, **options)]


async def test_200_items_at_concurrency_16_are_each_stored_once(tmp_path: Path) -> None:
    model = CountingModelDouble(latency_s=0.002)
    executor = InstantExecutorDouble(delay_s=0.002)
    prompts = [f"prompt {k}" for k in range(200)]
    pairs = await collect(
        prompts, model=model, executor=executor, run_dir=tmp_path, concurrency=16, execution_concurrency=4
    )
    assert sorted(item_id for item_id, _ in pairs) == sorted(str(k + 1) for k in range(200))
    assert all(result.status is RunStatus.SOLVED for _, result in pairs)
    assert set(model.per_prompt.values()) == {2}  # code, then the answer: nothing ran twice
    assert model.peak <= 16 and executor.peak <= 4
    assert model.peak > 4  # the bounds are separate: model calls were not held to the execution bound
    with BatchStore(tmp_path) as store:
        records = list(store.records())
        assert len(records) == 200 and {r.status for r in records} == {"done"} and {r.starts for r in records} == {1}
        assert len(store.attempt_rows()) == 200
        assert store.result("17").summary == "The answer is 42."
        assert [s["end_reason"] for s in store.sessions()] == ["completed"]


def test_sync_wrapper_runs_to_the_end_and_a_second_run_needs_resume(tmp_path: Path) -> None:
    pairs = run_batch_sync(["a", "b"], model=CountingModelDouble(), executor=InstantExecutorDouble(), run_dir=tmp_path)
    assert sorted(i for i, _ in pairs) == ["1", "2"]
    with pytest.raises(Exception, match="already holds a batch"):
        run_batch_sync(["a", "b"], model=CountingModelDouble(), executor=InstantExecutorDouble(), run_dir=tmp_path)
    model = CountingModelDouble()
    assert run_batch_sync(None, model=model, executor=InstantExecutorDouble(), run_dir=tmp_path, resume=True) == []
    assert model.per_prompt == {}  # nothing left to run


class RateLimitStormDouble:
    """Test double: the first ``storm`` calls answer 429, then it behaves. Records when calls start and when
    429s are answered, to check that workers paused together."""

    def __init__(self, storm: int) -> None:
        self.inner = ScriptedModel(CODE_THEN_ANSWER)
        self.name = "storm-double"
        self.storm = storm
        self.calls = 0
        self.starts: list[float] = []
        self.rejections: list[float] = []

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        self.calls += 1
        number = self.calls
        self.starts.append(time.monotonic())
        await asyncio.sleep(0.001)
        if number <= self.storm:
            self.rejections.append(time.monotonic())
            raise RateLimitError("429 Too Many Requests")
        return await self.inner.generate(conversation, tools)


async def test_a_429_storm_pauses_every_worker_then_finishes(tmp_path: Path) -> None:
    model = RateLimitStormDouble(storm=40)
    backoff = BackoffPolicy(base_delay_s=0.02, max_delay_s=0.2, max_rate_limit_retries=50)
    pairs = await collect(
        [f"p{k}" for k in range(30)],
        model=model,
        executor=InstantExecutorDouble(),
        run_dir=tmp_path,
        concurrency=8,
        backoff=backoff,
    )
    assert len(pairs) == 30 and all(r.status is RunStatus.SOLVED for _, r in pairs)
    assert model.calls == 40 + 60  # every 429 retried once per rejection, no other extra calls
    # No call started within the minimum pause after any 429: the workers backed off together.
    for rejected in model.rejections:
        assert not any(rejected < start < rejected + 0.02 * 0.9 for start in model.starts), rejected
    with BatchStore(tmp_path) as store:
        assert sum(r.rate_limited for r in store.records()) == 40
        assert store.counts()["solved"] == 30


class FailingForDouble:
    """Test double: a fixed error for chosen prompts, the script for the rest."""

    def __init__(self, bad: set[str], error: Exception) -> None:
        self.inner = ScriptedModel(CODE_THEN_ANSWER)
        self.name = "failing-double"
        self.bad = bad
        self.error = error

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        if conversation.first_prompt in self.bad:
            raise self.error
        return await self.inner.generate(conversation, tools)


async def test_model_errors_and_exhausted_rate_limits_are_recorded_and_resumable(tmp_path: Path) -> None:
    prompts = ["good 1", "server error", "good 2", "always 429"]

    class MixedDouble(FailingForDouble):
        async def generate(self, conversation, tools=()):
            if conversation.first_prompt == "always 429":
                raise RateLimitError("429", retry_after_s=0.001)
            return await super().generate(conversation, tools)

    model = MixedDouble({"server error"}, ModelError("500 internal", status_code=500))
    backoff = BackoffPolicy(base_delay_s=0.001, max_delay_s=0.01, max_rate_limit_retries=2)
    pairs = dict(
        await collect(prompts, model=model, executor=InstantExecutorDouble(), run_dir=tmp_path, backoff=backoff)
    )
    assert pairs["2"].error == "ModelError: 500 internal" and pairs["2"].status is RunStatus.FAILED
    assert "still rate limited after 2 backoffs" in pairs["4"].error
    with BatchStore(tmp_path) as store:
        assert [(r.id, r.status) for r in store.records()] == [
            ("1", "done"),
            ("2", "error"),
            ("3", "done"),
            ("4", "error"),
        ]
        assert next(r for r in store.records() if r.id == "4").rate_limited == 3
    healthy = CountingModelDouble()
    resumed = dict(
        await collect(
            None,
            model=healthy,
            executor=InstantExecutorDouble(),
            run_dir=tmp_path,
            resume=True,
            backoff=backoff,
            force=True,
        )
    )
    assert sorted(resumed) == ["2", "4"] and set(healthy.per_prompt) == {"server error", "always 429"}
    with BatchStore(tmp_path) as store:
        assert store.counts()["solved"] == 4


async def test_cancelling_marks_in_flight_items_pending_and_resume_finishes_the_rest(tmp_path: Path) -> None:
    model = CountingModelDouble(latency_s=0.02)
    prompts = [f"p{k}" for k in range(40)]
    seen: list[str] = []

    async def consume() -> None:
        async for item_id, _ in run_batch(
            prompts, model=model, executor=InstantExecutorDouble(), run_dir=tmp_path, concurrency=4
        ):
            seen.append(item_id)

    task = asyncio.create_task(consume())
    while len(seen) < 10:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with BatchStore(tmp_path) as store:
        counts = store.counts()
        assert counts["running"] == 0 and counts["done"] >= 10 and counts["pending"] > 0
        finished = {r.id for r in store.records() if r.status == "done"}
        interrupted = [r for r in store.records() if r.interruptions]
        assert interrupted and all(r.status == "pending" for r in interrupted)
        assert store.sessions()[0]["end_reason"] == "interrupted"
    resumed_model = CountingModelDouble()
    resumed = [
        i
        for i, _ in await collect(
            prompts, model=resumed_model, executor=InstantExecutorDouble(), run_dir=tmp_path, resume=True, force=True
        )
    ]
    assert set(resumed).isdisjoint(finished) and len(resumed) + len(finished) == 40
    with BatchStore(tmp_path) as store:
        assert store.counts()["done"] == 40 and len(store.attempt_rows()) == 40


async def test_two_drivers_cannot_share_a_run_directory(tmp_path: Path) -> None:
    model = CountingModelDouble(latency_s=0.05)
    first = run_batch(["a", "b"], model=model, executor=InstantExecutorDouble(), run_dir=tmp_path)
    got = await first.__anext__()
    try:
        with pytest.raises(BatchBusyError, match="another codeloop batch is running"):
            await collect(None, model=model, executor=InstantExecutorDouble(), run_dir=tmp_path, resume=True)
    finally:
        await first.aclose()
    assert got[0] in {"1", "2"}
    # Stopping early closed the session cleanly: the other item is pending again, nothing left running.
    with BatchStore(tmp_path) as store:
        assert store.counts()["running"] == 0 and store.sessions()[0]["end_reason"] == "interrupted"
    rest = await collect(None, model=model, executor=InstantExecutorDouble(), run_dir=tmp_path, resume=True)
    with BatchStore(tmp_path) as store:
        assert store.counts()["done"] == 2
    assert got[0] not in [item_id for item_id, _ in rest]  # the finished item was not run again


async def test_an_input_file_gone_by_resume_time_fails_that_item_only(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("x\n")
    items = [{"id": "ok", "prompt": "p"}, {"id": "gone", "prompt": "q", "files": [str(data)]}]
    run_dir = tmp_path / "run"
    first = dict(
        await collect(
            items, model=FailingForDouble({"q"}, ModelError("503")), executor=InstantExecutorDouble(), run_dir=run_dir
        )
    )
    assert first["gone"].error == "ModelError: 503"
    data.unlink()  # present when the batch was validated, gone when the item runs again
    resumed = dict(
        await collect(
            None,
            model=CountingModelDouble(),
            executor=InstantExecutorDouble(),
            run_dir=run_dir,
            resume=True,
            force=True,
        )
    )
    assert list(resumed) == ["gone"] and resumed["gone"].error.startswith("FileNotFoundError")
    with BatchStore(run_dir) as store:
        assert [(r.id, r.status) for r in store.records()] == [("ok", "done"), ("gone", "error")]


def test_backoff_gate_escalates_per_wave_and_honours_retry_after() -> None:
    now = [100.0]
    gate = BackoffGate(base_delay_s=1.0, max_delay_s=10.0, clock=lambda: now[0])
    assert gate.trip() == 1.0
    assert gate.trip() == 1.0  # the same wave: joins the pause, no escalation
    now[0] += 1.5
    assert gate.trip() == 2.0  # a new wave after the pause: doubled
    now[0] += 3
    assert gate.trip(retry_after_s=7.0) == 7.0
    now[0] += 8
    gate.succeeded()
    assert gate.trip() == 1.0
    now[0] += 2
    assert gate.trip(retry_after_s=99.0) == 10.0  # capped
    assert gate.trips == 6


async def test_progress_shows_counts_on_a_terminal_and_stays_quiet_otherwise(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from orchestrator.batch import BatchProgress

    screen = io.StringIO()
    shown = BatchProgress(console=Console(file=screen, force_terminal=True, width=160))
    await collect(
        ["a", "b", "c"],
        model=FailingForDouble({"b"}, ModelError("boom")),
        executor=InstantExecutorDouble(),
        run_dir=tmp_path / "tty",
        progress=shown,
    )
    assert shown.enabled and (shown.done, shown.solved, shown.errors) == (3, 2, 1)
    text = screen.getvalue()
    assert "3/3" in text and "solved 2" in text and "failed 1" in text

    piped = io.StringIO()
    quiet = BatchProgress(console=Console(file=piped))  # not a terminal
    await collect(
        ["a"], model=CountingModelDouble(), executor=InstantExecutorDouble(), run_dir=tmp_path / "pipe", progress=quiet
    )
    assert not quiet.enabled and quiet.done == 1 and piped.getvalue() == ""
    assert quiet.summary().startswith("1 run: 1 solved")


def test_the_ray_engine_refuses_an_executor_instance_before_touching_the_store(tmp_path: Path) -> None:
    # Each Ray worker builds its own executor, so it needs a name or a factory; no Ray is started for this.
    with pytest.raises(TypeError, match="pass the executor by name"):
        run_batch_sync(
            ["a"], model=CountingModelDouble(), executor=InstantExecutorDouble(), run_dir=tmp_path / "r", engine="ray"
        )
    assert not (tmp_path / "r").exists()


async def test_an_item_is_yielded_only_after_its_result_is_committed(tmp_path: Path) -> None:
    import sqlite3

    reader = None
    async for item_id, result in run_batch(
        [f"p{k}" for k in range(30)],
        model=CountingModelDouble(latency_s=0.001),
        executor=InstantExecutorDouble(),
        run_dir=tmp_path,
        concurrency=8,
    ):
        reader = reader or sqlite3.connect(f"file:{tmp_path / 'runs.db'}?mode=ro", uri=True)
        row = reader.execute("SELECT status, run_status FROM items WHERE id = ?", (item_id,)).fetchone()
        assert row == ("done", result.status.value)
    reader.close()


class InFlightModelDouble:
    """Test double: CODE_THEN_ANSWER with a latency; an item is in flight from its first
    model call until its last one returns. Records the most items in flight at once."""

    name = "in-flight-double"

    def __init__(self, latency_s: float) -> None:
        self.inner = ScriptedModel(CODE_THEN_ANSWER, latency_s=latency_s)
        self.in_flight: set[str] = set()
        self.peak = 0

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        prompt = conversation.first_prompt
        self.in_flight.add(prompt)
        self.peak = max(self.peak, len(self.in_flight))
        turn = await self.inner.generate(conversation, tools)
        if conversation.count("model") == len(CODE_THEN_ANSWER) - 1:  # the answer: this item is done
            self.in_flight.discard(prompt)
        return turn


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_n_keeps_at_most_n_items_in_flight(tmp_path: Path, concurrency: int) -> None:
    # Slow executions leave room for another item's model call: with --concurrency 1 two items overlapped.
    model = InFlightModelDouble(latency_s=0.01)
    executor = InstantExecutorDouble(delay_s=0.03)
    pairs = await collect(
        [f"p{k}" for k in range(8)], model=model, executor=executor, run_dir=tmp_path, concurrency=concurrency
    )
    assert len(pairs) == 8 and all(r.status is RunStatus.SOLVED for _, r in pairs)
    assert model.peak == concurrency
    assert executor.peak <= concurrency


async def test_a_model_requests_timeout_does_not_count_our_slot_wait() -> None:
    # A real HTTP model (the openai SDK against the fake server) whose requests take 0.4 s with a 0.6 s timeout.
    # Two calls share one model slot: the second waits 0.4 s for it, then still has its whole 0.6 s.
    from orchestrator.batch import GatedModel
    from orchestrator.models.openai_compat import OpenAIModel
    from orchestrator.models.retry import RetryPolicy
    from orchestrator.testing.fake_http import Delay
    from orchestrator.testing.fake_openai import FakeOpenAIServer, text_completion
    from orchestrator.types import UserMessage

    with FakeOpenAIServer(
        [Delay(0.4, text_completion("one")), Delay(0.4, text_completion("two")), Delay(0.8, text_completion("late"))]
    ) as fake:
        inner = OpenAIModel(
            "m",
            fake.base_url,
            api_key="sk-test-0123456789abcdefghijklmnop",
            retry=RetryPolicy(attempts=1, timeout_s=0.6),
        )
        slots = asyncio.Semaphore(1)
        gated = [GatedModel(inner, gate=BackoffGate(), slots=slots) for _ in range(2)]
        conversation = Conversation(messages=[UserMessage(text="x")])
        started = time.perf_counter()
        turns = await asyncio.gather(*(g.generate(conversation) for g in gated))
        assert sorted(t.text for t in turns) == ["one", "two"]
        assert time.perf_counter() - started >= 0.8  # the calls really were one after the other
        # The timeout itself is live: a request slower than it fails.
        with pytest.raises(ModelError, match="timed out"):
            await gated[0].generate(conversation)
        await asyncio.sleep(0.3)  # let the server finish its late answer while the test still captures its output
