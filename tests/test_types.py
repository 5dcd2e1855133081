"""Every result type's JSON: it survives a round trip; stores written by an
older or a newer codeloop still read back (unknown keys ignored, missing
optional keys defaulted); and what cannot be read names the type and field."""

from __future__ import annotations

import json
import re

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
    message_from_json,
)


def roundtrip(obj):
    data = json.loads(json.dumps(obj.to_json()))
    return type(obj).from_json(data)


def sample_result() -> ExecutionResult:
    return ExecutionResult(
        outcome=Outcome.FAILED,
        stdout="out",
        stderr="err",
        error_type="ValueError",
        error_message="bad",
        traceback="Traceback ...",
        exit_code=1,
        duration_s=0.5,
        cpu_time_s=0.25,
        peak_memory_bytes=1234,
        artifacts=[Artifact.of("plot.png", b"\x89PNG...")],
        stdout_truncated=True,
        executor="local",
        isolation="none",
        results=["42"],
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
    RunResult(
        prompt="p",
        summary="s",
        status=RunStatus.SOLVED,
        attempts=[Attempt(code="c", result=ExecutionResult(outcome=Outcome.FAILED))],
    ),
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_json_round_trip(obj):
    assert roundtrip(obj) == obj


def test_usage_roundtrip_and_sum():
    u = Usage(input_tokens=10, output_tokens=5, tool_tokens=3, thoughts_tokens=2, requests=1, cost_usd=0.5)
    assert roundtrip(u) == u
    total = u + Usage(input_tokens=1, requests=1)
    assert (total.input_tokens, total.requests, total.cost_usd) == (11, 2, 0.5)
    assert u.total_tokens == 20
    assert (Usage() + Usage()).cost_usd is None


def test_execution_result_roundtrip():
    r = sample_result()
    again = roundtrip(r)
    assert again == r
    assert again.outcome is Outcome.FAILED
    assert again.images[0].data == b"\x89PNG..."


def test_model_turn_roundtrip_keeps_raw_and_server_attempts():
    turn = ModelTurn(
        text="hi",
        code_blocks=[CodeBlock("x=1")],
        usage=Usage(input_tokens=3),
        finish_reason="STOP",
        model="m",
        raw={"role": "model", "parts": [{"text": "hi", "thought_signature": "c2ln"}]},
        executed=[Attempt(code="x=1", result=sample_result(), step=1, remote=True)],
    )
    assert roundtrip(turn) == turn


def test_attempt_message_conversation_roundtrip():
    attempt = Attempt(code="print(1)", result=sample_result(), step=2)
    assert roundtrip(attempt) == attempt
    conv = Conversation(system="sys")
    conv.add(UserMessage(text="q", files=[InputFile("a.csv", b"1,2")]))
    conv.add(ModelMessage(turn=ModelTurn(text="t")))
    conv.add(ExecutionMessage(result=sample_result(), feedback="fb"))
    assert roundtrip(conv) == conv


def test_each_message_is_tagged_with_its_kind_in_json():
    messages = [
        UserMessage(text="q", images=[Artifact.of("in.png", b"png")]),
        ModelMessage(turn=ModelTurn(text="t")),
        ExecutionMessage(result=sample_result(), feedback="fb"),
    ]
    data = [json.loads(json.dumps(m.to_json())) for m in messages]
    assert [d["kind"] for d in data] == ["user", "model", "execution"]
    assert [message_from_json(d) for d in data] == messages


def test_messages_saved_with_a_role_read_as_typed_messages():
    result = sample_result()
    old = [
        {
            "role": "user",
            "text": "q",
            "turn": None,
            "result": None,
            "code_blocks": [],
            "files": [InputFile("a.csv", b"1").to_json()],
            "images": [],
        },
        {
            "role": "model",
            "text": "t",
            "turn": ModelTurn(text="t").to_json(),
            "result": None,
            "code_blocks": [CodeBlock("x").to_json()],
            "files": [],
            "images": [],
        },
        {"role": "model", "text": "no turn kept"},
        {
            "role": "execution",
            "text": "fb",
            "turn": None,
            "result": result.to_json(),
            "code_blocks": [CodeBlock("x").to_json()],
            "files": [],
            "images": [Artifact.of("f.png", b"p").to_json()],
        },
    ]
    assert [message_from_json(d) for d in old] == [
        UserMessage(text="q", files=[InputFile("a.csv", b"1")]),
        ModelMessage(turn=ModelTurn(text="t")),
        ModelMessage(turn=ModelTurn(text="no turn kept")),
        ExecutionMessage(result=result, feedback="fb", images=[Artifact.of("f.png", b"p")]),
    ]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"kind": "system", "text": "x"}, "Message.kind: expected one of user, model, execution, got 'system'"),
        ({"role": "system", "text": "x"}, "Message.role: expected one of user, model, execution, got 'system'"),
        ({"role": "execution", "text": "fb"}, "ExecutionMessage: missing field result"),
        ({"kind": "model"}, "ModelMessage: missing field turn"),
        (["user", "q"], "Message: expected a JSON object, got list"),
    ],
)
def test_a_message_that_cannot_be_read_says_why(data, error):
    with pytest.raises(JSONDataError, match=re.escape(error)):
        Conversation.from_json({"messages": [{"kind": "user", "text": "q"}, data]})


def test_run_result_roundtrip():
    r = RunResult(
        prompt="p",
        summary="s",
        status=RunStatus.SOLVED,
        attempts=[Attempt(code="c", result=sample_result())],
        usage=Usage(input_tokens=1),
        wall_time_s=1.0,
        run_id="abc",
        model="m",
        executor="local",
    )
    assert roundtrip(r) == r
    assert r.artifacts[0].name == "plot.png"


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_an_unknown_key_from_a_newer_writer_is_ignored(obj):
    data = obj.to_json()
    data["field_from_the_future"] = {"anything": 1}
    assert type(obj).from_json(data) == obj


def test_a_renamed_limits_field_no_longer_breaks_an_old_store():
    # Limits.from_json did cls(**data): one key it did not know was a TypeError.
    stored = {**Limits().to_json(), "max_threads": 4}
    assert Limits.from_json(stored) == Limits()


@pytest.mark.parametrize(
    ("cls", "data", "expected"),
    [
        (Limits, {"timeout_s": 5.0}, Limits(timeout_s=5.0)),
        (Usage, {}, Usage()),
        (ExecutionResult, {"outcome": "OK"}, ExecutionResult(outcome=Outcome.OK)),
        (RunResult, {"prompt": "p", "status": "failed"}, RunResult(prompt="p", summary="", status=RunStatus.FAILED)),
        (UserMessage, {"kind": "user"}, UserMessage()),
    ],
)
def test_a_missing_optional_key_takes_its_default(cls, data, expected):
    assert cls.from_json(data) == expected


def test_a_missing_required_field_names_the_type_and_field():
    with pytest.raises(JSONDataError, match=r"RunResult: missing field prompt"):
        RunResult.from_json({"status": "solved", "summary": ""})


def test_a_bad_nested_value_names_where_it_sits():
    data = RunResult(
        prompt="p",
        summary="",
        status=RunStatus.SOLVED,
        attempts=[Attempt(code="c", result=ExecutionResult(outcome=Outcome.OK))],
    ).to_json()
    data["attempts"][0]["result"]["outcome"] = "EXPLODED"
    with pytest.raises(JSONDataError, match=r"RunResult\.attempts: Attempt\.result: ExecutionResult\.outcome"):
        RunResult.from_json(data)


def test_not_an_object_is_a_clear_error():
    with pytest.raises(JSONDataError, match="Usage: expected a JSON object, got list"):
        Usage.from_json([1, 2])
