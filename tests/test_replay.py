"""Recording and replaying model turns; replay never replays execution output."""

from __future__ import annotations

import json

import pytest

from orchestrator import Orchestrator, RunStatus, ScriptedModel
from orchestrator.models import RecordingModel, ReplayModel, get_model
from tests.conftest import EXAMPLES


async def test_replayed_code_runs_live(tmp_path, local_executor):
    cassette = tmp_path / "c.jsonl"
    recorder = RecordingModel(
        ScriptedModel(["```python\nimport random\nprint(random.random())\n```", "A number."]), cassette
    )
    first = await Orchestrator(recorder, local_executor).run("random please")
    second = await Orchestrator(ReplayModel(cassette), local_executor).run("random please")
    assert first.attempts[0].code == second.attempts[0].code
    assert first.attempts[0].result.stdout != second.attempts[0].result.stdout  # executed again, not replayed


async def test_missing_turn_is_a_clear_model_error(tmp_path, local_executor):
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(json.dumps({"prompt": "a", "index": 0, "turn": {"text": "x"}}) + "\n")
    result = await Orchestrator(ReplayModel(cassette), local_executor).run("another prompt")
    assert result.status is RunStatus.FAILED
    assert "has no turn 0 for the prompt 'another prompt'" in result.error


def test_malformed_cassette_names_the_line(tmp_path):
    cassette = tmp_path / "c.jsonl"
    cassette.write_text('{"prompt": "a", "index": 0, "turn": {}}\nnot json\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: not a cassette record"):
        ReplayModel(cassette)


def test_example_cassette_covers_every_example_prompt():
    model = get_model(f"replay:{EXAMPLES / 'cassette.jsonl'}")
    prompts = [json.loads(line)["prompt"] for line in (EXAMPLES / "prompts.jsonl").read_text().splitlines() if line]
    assert sorted(model.prompts) == sorted(prompts)
    assert len(prompts) >= 5


async def test_scripted_model_reports_exhaustion(local_executor):
    result = await Orchestrator(ScriptedModel(["```python\nprint(1)\n```"]), local_executor).run("q")
    assert result.status is RunStatus.FAILED
    assert "scripted model has no turn 1" in result.error
