"""OpenAIModel through the real openai SDK against the fake chat-completions server."""

from __future__ import annotations

import json

import pytest

from executors import ExecutionResult, Outcome
from orchestrator import Orchestrator, RunStatus, events
from orchestrator.models import ModelAuthError, ModelError, RateLimitError, get_model
from orchestrator.models.openai_compat import OpenAIModel, ToolSupport, parse_spec, to_messages
from orchestrator.models.retry import RetryPolicy
from orchestrator.testing.fake_http import Delay, Disconnect, Fault, Malformed
from orchestrator.testing.fake_openai import (
    FakeOpenAIServer,
    completion,
    text_completion,
    tool_call_completion,
)
from orchestrator.types import (
    RUN_PYTHON,
    Conversation,
    ExecutionMessage,
    ModelMessage,
    ModelTurn,
    UserMessage,
)
from tests.helpers import ask, fake_server_fixture, tool_call_turn

FAST = RetryPolicy(attempts=3, initial_delay_s=0.001, max_delay_s=0.005, timeout_s=5.0)
KEY = "sk-test-0123456789abcdefghijklmnop"


fake = fake_server_fixture(FakeOpenAIServer)


def local(fake: FakeOpenAIServer, **kwargs) -> OpenAIModel:
    kwargs.setdefault("retry", FAST)
    return OpenAIModel("qwen2.5-coder", fake.base_url, api_key=KEY, seed=1, **kwargs)


async def test_tool_calls_run_and_results_go_back_as_tool_messages(fake, local_executor):
    fake.add(
        tool_call_completion("print(1 / 0)", call_id="t1"),
        tool_call_completion("print(7)", call_id="t2"),
        text_completion("Seven."),
    )
    result = await Orchestrator(local(fake), local_executor).run("seven?")

    assert result.status is RunStatus.SOLVED and result.retries == 1
    assert [a.result.stdout for a in result.attempts] == ["", "7\n"]
    assert fake.requests[0].body["tools"][0]["function"]["name"] == "run_python"
    messages = fake.messages(2)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["id"] == "t1"
    assert messages[3]["tool_call_id"] == "t1" and "ZeroDivisionError" in messages[3]["content"]
    assert messages[5]["tool_call_id"] == "t2" and "7" in messages[5]["content"]
    assert fake.requests[0].key_fingerprint and KEY not in json.dumps(fake.requests[0].headers)


async def test_fenced_code_without_tool_support_falls_back_once(local_executor):
    with FakeOpenAIServer(
        [text_completion("```python\nprint(3 * 3)\n```"), text_completion("Nine.")], tools_supported=False
    ) as fake:
        model = local(fake)
        result = await Orchestrator(model, local_executor).run("3*3?")

    assert result.status is RunStatus.SOLVED and result.attempts[0].result.stdout == "9\n"
    assert not model.tools_supported and result.usage.requests == 3
    assert model.tool_support is ToolSupport.REFUSED
    assert (model.stats.requests, model.stats.declined, model.stats.failures) == (3, 1, 0)  # the probe, counted as such
    # The refused request, then the same request without tools, then no tools again.
    assert ["tools" in r.body for r in fake.requests] == [True, False, False]
    assert fake.messages(2)[-1]["role"] == "user"  # execution feedback as user text


async def test_tools_on_does_not_fall_back(fake):
    fake.add(Fault(400, "model does not support tools"))
    model = local(fake, tools="on")
    with pytest.raises(ModelError, match="does not support tools"):
        await model.generate(ask("x"), [RUN_PYTHON])
    assert len(fake.requests) == 1
    assert model.tool_support is ToolSupport.OFFERED and (model.stats.failures, model.stats.declined) == (1, 0)


async def test_summary_request_sets_tool_choice_none(fake, local_executor):
    fake.add(tool_call_completion("raise SystemExit(3)", call_id="a"), text_completion("It exits with 3."))
    result = await Orchestrator(local(fake), local_executor, max_retries=0).run("exit")

    assert result.status is RunStatus.FAILED
    assert fake.requests[1].body["tool_choice"] == "none"


async def test_usage_counts_reasoning_as_thoughts(fake):
    fake.add(completion({"content": "hi"}, prompt_tokens=50, completion_tokens=30, reasoning_tokens=12))
    turn = await local(fake).generate(ask("x"))
    u = turn.usage
    assert (u.input_tokens, u.output_tokens, u.thoughts_tokens, u.requests) == (50, 18, 12, 1)


async def test_retries_then_errors(fake):
    fake.add(Fault(429, retry_after_s=0.001), Fault(502), text_completion("ok"))
    model = local(fake)
    turn = await model.generate(ask("x"))
    assert turn.text == "ok" and turn.usage.requests == 3 and model.stats.retries == 2

    fake.add(*[Fault(429)] * 3)
    with pytest.raises(RateLimitError, match="gave up after 3 attempts"):
        await model.generate(ask("x"))

    fake.add(Fault(401, "Incorrect API key provided"))
    with pytest.raises(ModelAuthError, match="OPENAI_API_KEY"):
        await model.generate(ask("x"))
    assert len(fake.requests) == 7


async def test_a_key_the_server_does_not_expect_is_an_auth_error_and_not_retried():
    with (
        FakeOpenAIServer([text_completion("never")], expected_key="right-key") as server,
        pytest.raises(ModelAuthError, match="OPENAI_API_KEY"),
    ):
        await local(server).generate(ask("x"))
    assert len(server.requests) == 1 and server.pending == 1


@pytest.mark.parametrize(
    "fault",
    [Malformed(b"not json"), Malformed(b'{"choices": 5}'), Disconnect(), Delay(2.0, text_completion("late"))],
    ids=["not-json", "wrong-shape", "disconnect", "timeout"],
)
async def test_transient_faults_are_retried(fake, fault):
    fake.add(fault, text_completion("fine"))
    model = local(fake, retry=RetryPolicy(attempts=2, initial_delay_s=0.001, timeout_s=0.5))
    turn = await model.generate(ask("x"))
    assert turn.text == "fine" and model.stats.retries == 1


async def test_streaming_assembles_text_and_tool_calls(fake, local_executor):
    fake.add(
        tool_call_completion("print(2 ** 10)", call_id="s", text="Let me compute."), text_completion("It is 1024.")
    )
    orch = Orchestrator(local(fake), local_executor, stream_text=True)
    seen = [e async for e in orch.stream("2**10?")]

    deltas = [e.text for e in seen if isinstance(e, events.TextDelta)]
    assert "".join(deltas) == "Let me compute.It is 1024." and len(deltas) >= 4
    result = seen[-1].result
    assert result.attempts[0].result.stdout == "1024\n" and result.usage.input_tokens == 20
    assert all(r.body["stream"] for r in fake.requests)
    assert fake.messages(1)[2]["tool_calls"][0]["function"]["arguments"] == json.dumps({"code": "print(2 ** 10)"})


def test_messages_merge_user_texts_and_rebuild_foreign_turns():
    turn = tool_call_turn("print(1)", call_id="k")
    ok = ExecutionResult(outcome=Outcome.OK)
    conversation = Conversation(
        system="s",
        messages=[
            UserMessage(text="a"),
            ModelMessage(turn=turn),
            ExecutionMessage(result=ok, feedback="1"),
            UserMessage(text="b"),
            ModelMessage(turn=ModelTurn(text="```python\nx\n```")),
            ExecutionMessage(result=ok, feedback="feedback"),
            UserMessage(text="summarise"),
        ],
    )
    messages = to_messages(conversation)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user", "assistant", "user"]
    assert messages[2]["tool_calls"][0]["id"] == "k" and messages[3]["tool_call_id"] == "k"
    assert messages[-1]["content"] == "feedback\n\nsummarise"


def test_model_strings():
    assert parse_spec("llama3.1:8b@http://127.0.0.1:11434/v1") == ("llama3.1:8b", "http://127.0.0.1:11434/v1")
    assert parse_spec("me@org/model@https://h/v1") == ("me@org/model", "https://h/v1")
    assert parse_spec("gpt-4o-mini") == ("gpt-4o-mini", None)
    with pytest.raises(ValueError, match="needs a model name"):
        parse_spec("@http://x/v1")
    model = get_model("openai:qwen@http://127.0.0.1:9/v1")
    assert isinstance(model, OpenAIModel) and model.base_url == "http://127.0.0.1:9/v1"
    assert model.name == "openai:qwen@http://127.0.0.1:9/v1"


def test_key_source(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "not set" in OpenAIModel("m", "http://127.0.0.1:9/v1").key_source
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    model = OpenAIModel("m", "http://127.0.0.1:9/v1")
    assert model.key_source == "OPENAI_API_KEY" and KEY not in repr(model)
