"""One LoopConfig: validated, a JSON round trip (prompts included), and the
same settings reach the orchestrator, batches (local and Ray workers), the
benchmark harness and a resumed batch."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import pytest

import orchestrator
from executors import DEFAULT_EXECUTOR, ExecutionResult, Limits, Outcome
from orchestrator import Orchestrator, ScriptedModel
from orchestrator.batch import BatchStore, StoreError, run_batch
from orchestrator.batch.engine import ItemOutcome
from orchestrator.batch.limits import BackoffPolicy
from orchestrator.batch.ray_engine import BatchWorker
from orchestrator.config import GenerationOptions, LoopConfig
from orchestrator.images import ImageSettings
from orchestrator.prompts import Prompts
from orchestrator.types import ExecutionMessage, RunResult, RunStatus, UserMessage

CUSTOM = Prompts().replace(
    feedback_ok="CUSTOM FEEDBACK {output}", summary_request="CUSTOM SUMMARY", libraries=("numpy",)
)


def test_round_trips_through_json_with_prompts_limits_and_generation_options():
    config = LoopConfig(
        max_retries=2,
        max_steps=3,
        limits=Limits(timeout_s=4.0),
        prompts=CUSTOM,
        tools="off",
        require_code="always",
        context_tokens=4096,
        executor="local",
        executor_options={"workers": 2},
        generation=GenerationOptions(temperature=0.2),
        images=ImageSettings(see_figures="off", max_figures=1),
    )
    data = json.loads(json.dumps(config.to_json()))
    assert LoopConfig.from_json(data) == config
    assert LoopConfig.from_json(data).prompts.libraries == ("numpy",)


def test_reads_a_config_with_an_unknown_key_and_missing_ones():
    assert LoopConfig.from_json({"max_retries": 1, "from_a_newer_codeloop": True}) == LoopConfig(max_retries=1)


def test_is_frozen_all_the_way_down():
    config = LoopConfig(executor_options={"a": 1})
    with pytest.raises(AttributeError):
        config.max_retries = 3
    with pytest.raises(TypeError):
        config.executor_options["a"] = 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"tools": "maybe"}, "tools must be 'auto', 'on' or 'off'"),
        ({"require_code": "sometimes"}, "require_code must be"),
        ({"context_tokens": 0}, "context_tokens must be positive"),
        ({"executor": ""}, "executor must be an executor's name"),
    ],
)
def test_bad_values_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**settings)


def test_an_unknown_setting_lists_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown loop setting max_retry; LoopConfig has: .*max_retries"):
        LoopConfig().replace(max_retry=3)
    with pytest.raises(TypeError, match="unknown loop setting"):
        Orchestrator(ScriptedModel(["hi"]), object(), max_retry=3)


def test_one_default_executor_the_isolated_one():
    assert DEFAULT_EXECUTOR == "sandbox" and LoopConfig().executor == DEFAULT_EXECUTOR
    # run_batch and the bench no longer carry a default of their own (it was "local" for run_batch).
    from benchmarks.runner import run_benchmark

    for function in (run_batch, run_benchmark, orchestrator.arun):
        assert inspect.signature(function).parameters["executor"].default is None


class RecordingEngineDouble:
    """Test double engine: runs nothing, answers every item at once."""

    name = "recording-double"
    slots = 1

    async def start(self) -> None:
        return None

    async def run(self, item):
        return ItemOutcome(
            RunResult(prompt=item.prompt, summary="ok", status=RunStatus.ANSWERED_WITHOUT_CODE, run_id=item.id)
        )

    async def aclose(self) -> None:
        return None


async def batch(run_dir: Path, items=("a",), **options) -> list[str]:
    listed = [{"id": name, "prompt": name} for name in items] if items is not None else None
    return [
        item_id
        async for item_id, _ in run_batch(listed, model="m", run_dir=run_dir, engine=RecordingEngineDouble(), **options)
    ]


def stored_config(run_dir: Path) -> dict:
    with BatchStore(run_dir, create=False) as store:
        return store.settings()["config"]


async def test_a_batch_defaults_to_the_isolated_executor_and_stores_its_whole_config(tmp_path: Path):
    await batch(tmp_path, config=LoopConfig(prompts=CUSTOM, max_retries=2))
    stored = LoopConfig.from_json(stored_config(tmp_path))
    assert stored == LoopConfig(prompts=CUSTOM, max_retries=2) and stored.executor == "sandbox"


async def test_a_resume_without_a_config_runs_with_the_stored_one(tmp_path: Path):
    await batch(tmp_path, items=("a",), config=LoopConfig(prompts=CUSTOM, max_retries=2, executor="local"))
    assert await batch(tmp_path, items=("a", "b"), resume=True) == ["b"]
    assert LoopConfig.from_json(stored_config(tmp_path)) == LoopConfig(prompts=CUSTOM, max_retries=2, executor="local")
    # Keyword settings apply over the stored config, and a difference needs force.
    with pytest.raises(StoreError, match=r"(?s)max_retries: stored 2, now 4.*--force"):
        await batch(tmp_path, items=None, resume=True, max_retries=4)
    with pytest.raises(StoreError, match="prompts: the stored and the new prompts differ"):
        await batch(tmp_path, items=None, resume=True, config=LoopConfig(max_retries=2, executor="local"))
    await batch(tmp_path, items=None, resume=True, force=True, max_retries=4)
    assert stored_config(tmp_path)["max_retries"] == 4 and stored_config(tmp_path)["prompts"] is not None


async def test_prompts_reach_the_items_of_a_local_batch(tmp_path: Path, local_executor):
    seen: list[str] = []

    def script(conversation, tools):
        seen.extend(m.text for m in conversation.messages if isinstance(m, UserMessage))
        seen.extend(m.feedback for m in conversation.messages if isinstance(m, ExecutionMessage))
        return "```python\nprint(42)\n```" if conversation.count("model") == 0 else "It is 42."

    pairs = [
        pair
        async for pair in run_batch(
            ["q"],
            model=ScriptedModel(script),
            executor=local_executor,
            run_dir=tmp_path,
            config=LoopConfig(prompts=CUSTOM, max_steps=1),
        )
    ]
    assert pairs[0][1].summary == "It is 42."
    assert any(text.startswith("CUSTOM FEEDBACK") for text in seen) and "CUSTOM SUMMARY" in seen


class _RemoteCall:
    def __init__(self, value):
        self.value = value

    def remote(self, *args):
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.value)
        return future


class GateActorDouble:
    """Test double for the Ray gate actor's handle: never paused."""

    paused_until = _RemoteCall(0.0)
    trip = _RemoteCall(0.0)
    succeeded = _RemoteCall(None)


class OkExecutorDouble:
    name = "ok-double"
    stateful = False

    async def execute(self, code, *, files=(), limits=None, session=None):
        return ExecutionResult(outcome=Outcome.OK, stdout=f"limit {limits.timeout_s}\n")

    async def reset(self, session=None):
        return None

    async def aclose(self):
        return None


async def test_a_ray_worker_runs_with_the_config_it_was_sent_as_json():
    seen: list[str] = []

    def script(conversation, tools):
        seen.extend(m.feedback for m in conversation.messages if isinstance(m, ExecutionMessage))
        return "```python\nprint(1)\n```" if conversation.count("model") == 0 else "done"

    config = LoopConfig(prompts=CUSTOM, limits=Limits(timeout_s=7.0), max_steps=1)
    worker = BatchWorker(
        ScriptedModel(script),
        OkExecutorDouble,
        json.loads(json.dumps(config.to_json())),
        BackoffPolicy().to_json(),
        GateActorDouble(),
        concurrency=1,
        execution_concurrency=1,
    )
    out = await worker.run({"id": "x", "prompt": "q"}, [])
    assert RunResult.from_json(out["result"]).attempts[0].result.stdout == "limit 7.0\n"
    assert seen == ["CUSTOM FEEDBACK stdout:\nlimit 7.0"]
    await worker.close()


async def test_prompts_reach_a_benchmark_and_are_recorded(tmp_path: Path, local_executor):
    from benchmarks import BenchItem, run_benchmark

    seen: list[str] = []

    def script(conversation, tools):
        seen.extend(m.feedback for m in conversation.messages if isinstance(m, ExecutionMessage))
        return "```python\nprint(42)\n```" if conversation.count("model") == 0 else "The answer is 42."

    items = [BenchItem(id="q1", prompt="What is 6*7?", answer="42", scoring="numeric")]
    result = await run_benchmark(
        items,
        model=ScriptedModel(script),
        bench_dir=tmp_path,
        executor=local_executor,
        config=LoopConfig(prompts=CUSTOM),
        scoring_executor=local_executor,
    )
    assert result.metrics.items == 1
    assert any(text.startswith("CUSTOM FEEDBACK") for text in seen)
    assert LoopConfig.from_json(result.config["loop_config"]).prompts == CUSTOM


def test_a_cli_resume_keeps_the_stored_config_and_refuses_a_differing_flag(tmp_path: Path, capsys):
    from orchestrator.batch import run_batch_sync
    from orchestrator.cli import main

    script = tmp_path / "script.json"
    script.write_text(json.dumps(["```python\nprint(42)\n```", "It is 42."]))
    run_dir = tmp_path / "run"
    config = LoopConfig(prompts=CUSTOM, max_retries=2, executor="local")
    run_batch_sync([{"id": "a", "prompt": "6*7?"}], model=f"scripted:{script}", run_dir=run_dir, config=config)
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "b", "prompt": "7*6?"}) + "\n")
    # Flags left out (the prompts cannot even be given on the command line) take the stored values.
    assert main(["batch", str(more), "-o", str(run_dir), "--resume", "--no-progress"]) == 0
    with BatchStore(run_dir, create=False) as store:
        assert LoopConfig.from_json(store.settings()["config"]) == config
        assert store.counts()["done"] == 2
    capsys.readouterr()
    assert main(["batch", "-o", str(run_dir), "--resume", "--max-retries", "4", "--no-progress"]) == 2
    assert "max_retries: stored 2, now 4" in capsys.readouterr().err
