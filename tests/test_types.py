"""Every result type survives a JSON round trip."""

from __future__ import annotations

import json

from executors import Artifact, ExecutionResult, InputFile, Limits, Outcome
from orchestrator.types import (
    Attempt,
    CodeBlock,
    Conversation,
    Message,
    ModelTurn,
    RunResult,
    RunStatus,
    Usage,
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


def test_usage_roundtrip_and_sum():
    u = Usage(input_tokens=10, output_tokens=5, tool_tokens=3, thoughts_tokens=2, requests=1, cost_usd=0.5)
    assert roundtrip(u) == u
    total = u + Usage(input_tokens=1, requests=1)
    assert (total.input_tokens, total.requests, total.cost_usd) == (11, 2, 0.5)
    assert u.total_tokens == 20
    assert (Usage() + Usage()).cost_usd is None


def test_code_block_roundtrip():
    block = CodeBlock(code="print(1)", source="tool_call", call_id="abc")
    assert roundtrip(block) == block


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
    conv.add(Message(role="user", text="q", files=[InputFile("a.csv", b"1,2")]))
    conv.add(Message(role="model", text="t", turn=ModelTurn(text="t")))
    conv.add(Message(role="execution", text="fb", result=sample_result(), code_blocks=[CodeBlock("x")]))
    assert roundtrip(conv) == conv


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


def test_limits_roundtrip():
    limits = Limits(timeout_s=3, memory_bytes=10)
    assert Limits.from_json(json.loads(json.dumps(limits.to_json()))) == limits
