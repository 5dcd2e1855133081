"""One serialisation for every result type: stores written by an older or a
newer codeloop still read back (unknown keys ignored, missing optional keys
defaulted), and what cannot be read names the type and field."""

from __future__ import annotations

import pytest

from executors import Artifact, ExecutionResult, InputFile, Limits, Outcome
from executors.jsondata import JSONDataError
from orchestrator.types import (
    Attempt,
    CodeBlock,
    Conversation,
    ExecutionMessage,
    ModelMessage,
    ModelTurn,
    RunResult,
    RunStatus,
    Usage,
    UserMessage,
)

SAMPLES = [
    Limits(timeout_s=3.0),
    Artifact.of("a.png", b"png"),
    InputFile(name="x.csv", data=b"1,2"),
    ExecutionResult(outcome=Outcome.OK, stdout="hi", artifacts=[Artifact.of("a.txt", b"t")]),
    Usage(input_tokens=3, requests=1),
    CodeBlock(code="print(1)", source="tool_call", call_id="c1"),
    Attempt(code="print(1)", result=ExecutionResult(outcome=Outcome.OK), step=1),
    ModelTurn(text="t", code_blocks=[CodeBlock(code="x")], raw={"k": [1]}),
    ModelMessage(turn=ModelTurn(text="t")),
    ExecutionMessage(result=ExecutionResult(outcome=Outcome.OK), feedback="f"),
    Conversation(system="s", messages=[UserMessage(text="q", files=[InputFile("f", b"d")])]),
    RunResult(prompt="p", summary="s", status=RunStatus.SOLVED, attempts=[
        Attempt(code="c", result=ExecutionResult(outcome=Outcome.FAILED))]),
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_an_unknown_key_from_a_newer_writer_is_ignored(obj):
    data = obj.to_json()
    data["field_from_the_future"] = {"anything": 1}
    assert type(obj).from_json(data) == obj


def test_a_renamed_limits_field_no_longer_breaks_an_old_store():
    # Limits.from_json did cls(**data): one key it did not know was a TypeError.
    stored = {**Limits().to_json(), "max_threads": 4}
    assert Limits.from_json(stored) == Limits()


@pytest.mark.parametrize(("cls", "data", "expected"), [
    (Limits, {"timeout_s": 5.0}, Limits(timeout_s=5.0)),
    (Usage, {}, Usage()),
    (ExecutionResult, {"outcome": "OK"}, ExecutionResult(outcome=Outcome.OK)),
    (RunResult, {"prompt": "p", "status": "failed"}, RunResult(prompt="p", summary="", status=RunStatus.FAILED)),
    (UserMessage, {"kind": "user"}, UserMessage()),
])
def test_a_missing_optional_key_takes_its_default(cls, data, expected):
    assert cls.from_json(data) == expected


def test_a_missing_required_field_names_the_type_and_field():
    with pytest.raises(JSONDataError, match=r"RunResult: missing field prompt"):
        RunResult.from_json({"status": "solved", "summary": ""})


def test_a_bad_nested_value_names_where_it_sits():
    data = RunResult(prompt="p", summary="", status=RunStatus.SOLVED,
                     attempts=[Attempt(code="c", result=ExecutionResult(outcome=Outcome.OK))]).to_json()
    data["attempts"][0]["result"]["outcome"] = "EXPLODED"
    with pytest.raises(JSONDataError, match=r"RunResult\.attempts: Attempt\.result: ExecutionResult\.outcome"):
        RunResult.from_json(data)


def test_not_an_object_is_a_clear_error():
    with pytest.raises(JSONDataError, match="Usage: expected a JSON object, got list"):
        Usage.from_json([1, 2])
