"""AnthropicModel through the real anthropic SDK against the fake Messages API server."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from orchestrator import Orchestrator, RunStatus, events
from orchestrator.logs import configure_logging
from orchestrator.models import ModelAuthError, ModelError, RateLimitError, StreamingModel, get_model
from orchestrator.models.anthropic import AnthropicModel, to_messages
from orchestrator.models.pricing import ANTHROPIC_PRICES
from orchestrator.models.registry import default_model
from orchestrator.models.retry import RetryPolicy
from orchestrator.testing.fake_anthropic import (
    FakeAnthropicServer,
    events_of,
    overloaded,
    text_message,
    tool_use_message,
    usage,
)
from orchestrator.testing.fake_http import Disconnect, Fault, Malformed, Stream
from orchestrator.types import RUN_PYTHON, CodeBlock, Conversation, ModelMessage, ModelTurn, UserMessage
from tests.helpers import ask, fake_server_fixture, tool_call_turn

KEY = "sk-ant-api03-fake-test-key-0123456789abcdef"
FAST = RetryPolicy(attempts=3, initial_delay_s=0.001, max_delay_s=0.005, timeout_s=5.0)


fake = fake_server_fixture(FakeAnthropicServer)


def claude(fake: FakeAnthropicServer, **kwargs) -> AnthropicModel:
    kwargs.setdefault("retry", FAST)
    return AnthropicModel("claude-sonnet-4-5", api_key=KEY, base_url=fake.url, seed=1, env={}, **kwargs)


async def test_tool_use_loop_solves_a_run_and_results_go_back_as_tool_result_blocks(fake, local_executor):
    fake.add(
        tool_use_message("print(1 / 0)", call_id="toolu_a", text="Trying."),
        tool_use_message("print(6 * 7)", call_id="toolu_b"),
        text_message("It is 42."),
    )
    model = claude(fake)
    result = await Orchestrator(model, local_executor).run("six times seven?")

    assert result.status is RunStatus.SOLVED and result.summary == "It is 42." and result.retries == 1
    assert [a.result.stdout for a in result.attempts] == ["", "42\n"]
    first = fake.requests[0].body
    assert first["tools"] == [
        {"name": "run_python", "description": RUN_PYTHON.description, "input_schema": RUN_PYTHON.parameters}
    ]
    assert first["system"] and all(m["role"] in ("user", "assistant") for m in first["messages"])
    assert first["max_tokens"] == 4096 and first["model"] == "claude-sonnet-4-5"
    assert first["cache_control"] == {"type": "ephemeral"}  # the history is resent: cache it
    messages = fake.messages(2)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Trying."},
        {"type": "tool_use", "id": "toolu_a", "name": "run_python", "input": {"code": "print(1 / 0)"}},
    ]
    failed, ok = messages[2]["content"][0], messages[4]["content"][0]
    assert failed["type"] == "tool_result" and failed["tool_use_id"] == "toolu_a" and failed["is_error"]
    assert "ZeroDivisionError" in failed["content"][0]["text"]
    assert ok["tool_use_id"] == "toolu_b" and not ok["is_error"] and "42" in ok["content"][0]["text"]
    assert model.stats.requests == 3 and model.stats.failures == 0


async def test_summary_request_declares_the_tool_but_forbids_calling_it(fake, local_executor):
    fake.add(tool_use_message("raise SystemExit(3)", call_id="toolu_x"), text_message("It exits with 3."))
    result = await Orchestrator(claude(fake), local_executor, max_retries=0).run("exit")

    assert result.summary == "It exits with 3."
    last = fake.requests[-1].body
    assert last["tool_choice"] == {"type": "none"} and last["tools"][0]["name"] == "run_python"


async def test_streaming_yields_text_then_the_turn_with_its_tool_call(fake):
    fake.add(tool_use_message("print('streamed')", call_id="toolu_s", text="Let me run it."))
    model = claude(fake)
    assert isinstance(model, StreamingModel)
    pieces = [p async for p in model.generate_stream(ask(), [RUN_PYTHON])]

    deltas, turn = pieces[:-1], pieces[-1]
    assert len(deltas) > 1 and "".join(deltas) == "Let me run it."
    assert isinstance(turn, ModelTurn) and turn.finish_reason == "tool_use"
    assert turn.code_blocks == [CodeBlock(code="print('streamed')", source="tool_call", call_id="toolu_s")]
    assert fake.requests[0].body["stream"] is True
    assert turn.usage.input_tokens == 10 and turn.usage.output_tokens == 5 and turn.usage.requests == 1


async def test_streaming_run_through_the_orchestrator(fake, local_executor):
    fake.add(tool_use_message("print(2 + 2)"), text_message("Four."))
    orchestrator = Orchestrator(claude(fake), local_executor, stream_text=True)
    seen = [e async for e in orchestrator.stream("2+2?")]

    assert any(isinstance(e, events.TextDelta) for e in seen)
    assert seen[-1].result.status is RunStatus.SOLVED and seen[-1].result.summary == "Four."


@pytest.mark.parametrize(
    "fault", [Fault(429, "rate limited", retry_after_s=0.001), overloaded()], ids=["429", "529-overloaded"]
)
async def test_rate_limit_and_overload_are_retried_then_succeed(fake, fault):
    fake.add(fault, text_message("fine"))
    model = claude(fake)
    turn = await model.generate(ask())

    assert turn.text == "fine" and turn.usage.requests == 2
    assert model.stats.retries == 1 and model.stats.failures == 0 and len(fake.requests) == 2


async def test_stream_open_is_retried_after_529(fake):
    fake.add(overloaded(), text_message("after the wait"))
    pieces = [p async for p in claude(fake).generate_stream(ask())]
    assert pieces[-1].text == "after the wait" and pieces[-1].usage.requests == 2


async def test_rate_limit_after_all_attempts_is_a_rate_limit_error(fake):
    fake.add(*[Fault(429)] * FAST.attempts)
    with pytest.raises(RateLimitError, match="gave up after 3 attempts"):
        await claude(fake).generate(ask())


async def test_overload_forever_ends_the_run_failed_with_the_error_recorded(fake, local_executor):
    fake.add(*[overloaded()] * FAST.attempts)
    model = claude(fake)
    result = await Orchestrator(model, local_executor).run("hi")
    assert result.status is RunStatus.FAILED and "HTTP 529" in result.error and "overloaded_error" in result.error
    assert model.stats.failures == 1 and len(fake.requests) == FAST.attempts


@pytest.mark.parametrize("fault", [Malformed(b"{not json"), Disconnect(), Fault(500)])
async def test_transient_faults_are_retried(fake, fault):
    fake.add(fault, text_message("recovered"))
    assert (await claude(fake).generate(ask())).text == "recovered"


async def test_a_stream_that_breaks_off_is_an_error_not_retried(fake):
    events_list = events_of(text_message("never finished"))
    fake.add(Stream([*events_list[:3], b"event: content_block_delta\ndata: {broken\n\n"]))
    model = claude(fake)
    with pytest.raises(ModelError, match="broke off"):
        async for _ in model.generate_stream(ask()):
            pass
    assert len(fake.requests) == 1 and model.stats.failures == 1


async def test_usage_counts_cache_tokens_and_prices_them(fake):
    fake.add(text_message("cached", usage_data=usage(100, 20, cache_creation=1000, cache_read=4000)))
    turn = await claude(fake).generate(ask())

    u = turn.usage
    assert (u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens) == (5100, 20, 1000, 4000)
    # Sonnet: $3 input, $15 output, $0.30 cache read, $3.75 cache write per million tokens.
    expected = (100 * 3.00 + 20 * 15.00 + 4000 * 0.30 + 1000 * 3.75) / 1_000_000
    assert u.cost_usd == pytest.approx(expected)
    assert ANTHROPIC_PRICES.price_for("claude-opus-4-5-20251101").input_per_mtok == 5.00


async def test_prompt_cache_can_be_turned_off(fake):
    fake.add(text_message("no cache"))
    await claude(fake, prompt_cache=False).generate(ask())
    assert "cache_control" not in fake.requests[0].body


async def test_streamed_usage_keeps_the_cache_counts_of_message_start(fake):
    fake.add(text_message("s", usage_data=usage(7, 3, cache_read=50)))
    turn = [p async for p in claude(fake).generate_stream(ask())][-1]
    assert (turn.usage.input_tokens, turn.usage.output_tokens, turn.usage.cache_read_tokens) == (57, 3, 50)


async def test_a_bad_key_is_a_clear_auth_error_never_retried():
    with FakeAnthropicServer([text_message("never")], expected_key="right-key") as server:
        model = AnthropicModel(
            "claude-haiku-4-5", base_url=server.url, retry=FAST, env={"ANTHROPIC_API_KEY": "wrong-key-0123456789"}
        )
        with pytest.raises(ModelAuthError) as caught:
            await model.generate(ask())
    message = str(caught.value)
    assert "ANTHROPIC_API_KEY" in message and "HTTP 401" in message and "invalid x-api-key" in message
    assert "wrong-key-0123456789" not in message and len(server.requests) == 1


def test_without_the_sdk_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "anthropic", None)  # what an uninstalled package looks like
    with pytest.raises(ModelError, match=r"pip install 'codeloop\[anthropic\]'"):
        AnthropicModel("claude-haiku-4-5", api_key="k")


def test_missing_key_names_the_variable():
    with pytest.raises(ModelAuthError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-haiku-4-5", env={})


def test_key_and_endpoint_come_from_the_env_mapping_given():
    model = AnthropicModel(
        "claude-haiku-4-5", env={"ANTHROPIC_API_KEY": "k-123456", "ANTHROPIC_BASE_URL": "http://h:1"}
    )
    assert model.key_source == "ANTHROPIC_API_KEY" and model.base_url == "http://h:1"
    assert "k-123456" not in repr(model)


def test_model_strings_and_the_default_model(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-from-the-environment")
    model = get_model("anthropic:claude-haiku-4-5")
    assert isinstance(model, AnthropicModel) and model.name == "anthropic:claude-haiku-4-5"
    keys = {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}
    assert default_model(keys).spec.startswith("openai:")
    assert default_model({"ANTHROPIC_API_KEY": "a"}).spec == "anthropic:claude-sonnet-4-5"
    assert (
        default_model({"ANTHROPIC_API_KEY": "a", "ANTHROPIC_MODEL": "claude-opus-4-5"}).spec
        == "anthropic:claude-opus-4-5"
    )


def test_foreign_turns_are_rebuilt_and_unanswered_calls_are_answered():
    other = tool_call_turn("print(1)", call_id="c9")
    conversation = Conversation(messages=[UserMessage(text="q"), ModelMessage(turn=other), UserMessage(text="next")])
    messages = to_messages(conversation)

    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "c9", "name": "run_python", "input": {"code": "print(1)"}}
    ]
    answer = messages[2]["content"]
    assert answer[0] == {
        "type": "tool_result",
        "tool_use_id": "c9",
        "is_error": True,
        "content": [{"type": "text", "text": "This call was not run."}],
    }
    assert answer[1] == {"type": "text", "text": "next"}


async def test_thinking_blocks_are_sent_back_exactly(fake, local_executor):
    thinking = {"type": "thinking", "thinking": "let me think", "signature": "c2lnbmF0dXJl"}
    reply = tool_use_message("print(5)", call_id="toolu_t")
    reply["content"].insert(0, thinking)
    fake.add(reply, text_message("5"))
    await Orchestrator(claude(fake), local_executor).run("five")
    assert fake.messages(1)[1]["content"][0] == thinking


async def test_the_key_never_reaches_logs_results_or_errors(fake, local_executor):
    fake.add(Fault(500, f"echoing your key {KEY}"), tool_use_message("print('ok')"), text_message("done"))
    stream = io.StringIO()
    configure_logging(json_lines=True, level="debug", stream=stream, env={})
    try:
        result = await Orchestrator(claude(fake), local_executor).run("go")
    finally:
        structlog.reset_defaults()
    assert result.status is RunStatus.SOLVED
    assert KEY not in stream.getvalue() and "model_retry" in stream.getvalue()
    assert KEY not in json.dumps(result.to_json())
    assert all(KEY not in json.dumps(r.headers) for r in fake.requests) and fake.requests[0].key_fingerprint
