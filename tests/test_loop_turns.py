"""The loop leaves the turns a provider made as they were: ScriptedModel hands
out its script's own turn objects (no defensive copy), and running the same
script twice gives the same runs."""

from __future__ import annotations

import copy

from executors import ExecutionResult, Outcome
from orchestrator import Orchestrator, RunStatus, ScriptedModel
from orchestrator.types import Attempt, CodeBlock, ModelTurn, Usage

CODE = "print(6 * 7)"


def script() -> list[ModelTurn]:
    return [
        ModelTurn(
            text="Let me compute.",
            code_blocks=[CodeBlock(code=CODE, source="tool_call", call_id="c1")],
            usage=Usage(input_tokens=10, output_tokens=5, requests=0),
            model="m",
        ),
        ModelTurn(
            text="It is 42.", usage=Usage(input_tokens=20, output_tokens=3, requests=1), model="m", finish_reason="STOP"
        ),
    ]


def remote_script() -> list[ModelTurn]:
    done = Attempt(code=CODE, result=ExecutionResult(outcome=Outcome.OK, stdout="42\n"))
    return [ModelTurn(text="It is 42.", executed=[done], usage=Usage(requests=1), model="m")]


async def test_scripted_model_returns_its_own_turn_when_nothing_is_missing():
    turns = script()
    model = ScriptedModel(turns)
    from orchestrator.types import Conversation, ModelMessage, UserMessage

    conversation = Conversation(messages=[UserMessage(text="q"), ModelMessage(turn=ModelTurn(text="x"))])
    assert await model.generate(conversation) is turns[1]


async def test_a_run_changes_none_of_the_providers_turns(local_executor):
    turns = script()
    before = copy.deepcopy(turns)
    model = ScriptedModel(turns)
    first = await Orchestrator(model, local_executor).run("what is 6*7?")
    assert turns == before  # usage.requests stayed 0 on the provider's turn; the loop counted it on its own copy
    assert first.status is RunStatus.SOLVED and first.usage.requests == 2
    second = await Orchestrator(model, local_executor).run("what is 6*7?")
    assert turns == before
    assert [a.to_json() | {"result": None} for a in second.attempts] == [
        a.to_json() | {"result": None} for a in first.attempts
    ]
    assert (second.summary, second.usage.requests) == (first.summary, first.usage.requests)


async def test_remote_attempts_are_recorded_without_changing_the_providers_turn(local_executor):
    turns = remote_script()
    before = copy.deepcopy(turns)
    result = await Orchestrator(ScriptedModel(turns), local_executor).run("what is 6*7?")
    assert turns == before  # step and remote were set on the run's own attempts
    assert [(a.step, a.remote) for a in result.attempts] == [(1, True)]
    assert result.status is RunStatus.SOLVED


class HandsOutTurnsDouble:
    """A test double provider that returns its turns exactly as made (no usage filled in)."""

    name = "turns-double"

    def __init__(self, turns: list[ModelTurn]) -> None:
        self.turns = turns

    async def generate(self, conversation, tools=()):
        return self.turns[conversation.count("model")]


async def test_a_turn_without_a_request_count_is_counted_without_changing_it(local_executor):
    turns = [ModelTurn(text=f"```python\n{CODE}\n```", usage=Usage(output_tokens=5)), ModelTurn(text="It is 42.")]
    before = copy.deepcopy(turns)
    result = await Orchestrator(HandsOutTurnsDouble(turns), local_executor).run("what is 6*7?")
    assert turns == before
    assert result.usage.requests == 2 and result.usage.output_tokens == 5
