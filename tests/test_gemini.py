"""GeminiModel through the real google-genai SDK against the fake Gemini server."""

from __future__ import annotations

import base64
import io
import json

import pytest
import structlog
from google.genai import types

from executors import ExecutionResult, InputFile, Outcome
from orchestrator import Orchestrator, RunStatus, events
from orchestrator.logs import configure_logging
from orchestrator.models import ModelAuthError, ModelError, RateLimitError, StreamingModel
from orchestrator.models.gemini import GeminiModel, parse_content, to_contents
from orchestrator.models.pricing import ModelPrice, PriceTable
from orchestrator.models.retry import RetryPolicy
from orchestrator.testing.fake_gemini import (
    FakeGeminiServer,
    function_call_part,
    function_call_response,
    response,
    server_execution_response,
    text_part,
    text_response,
    usage,
)
from orchestrator.testing.fake_http import Delay, Disconnect, Fault, Malformed, Stream
from orchestrator.types import (
    RUN_PYTHON,
    Conversation,
    ExecutionMessage,
    ModelMessage,
    UserMessage,
)
from tests.helpers import ask, fake_server_fixture, tool_call_turn

KEY = "AIzaSy-fake-test-key-0123456789abcdef"
FAST = RetryPolicy(attempts=4, initial_delay_s=0.001, max_delay_s=0.005, timeout_s=5.0)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


fake = fake_server_fixture(FakeGeminiServer)


def gemini(fake: FakeGeminiServer, mode: str = "client", **kwargs) -> GeminiModel:
    kwargs.setdefault("retry", FAST)
    return GeminiModel("gemini-2.5-flash", api_key=KEY, mode=mode, base_url=fake.url, seed=1, **kwargs)


def part_kinds(content: dict) -> list[str]:
    return [next(k for k in part if k != "thoughtSignature") for part in content["parts"]]


# -- client mode ------------------------------------------------------------------


async def test_client_mode_solves_first_time(fake, local_executor):
    fake.add(function_call_response("print(6 * 7)", call_id="c1"), text_response("The answer is 42."))
    result = await Orchestrator(gemini(fake), local_executor).run("What is 6 times 7?")

    assert result.status is RunStatus.SOLVED
    assert result.summary == "The answer is 42."
    assert [a.result.stdout for a in result.attempts] == ["42\n"]
    assert not result.attempts[0].remote
    first = fake.requests[0].body
    assert fake.model_of(fake.requests[0]) == "gemini-2.5-flash"
    assert first["tools"][0]["functionDeclarations"][0]["name"] == "run_python"
    assert "You solve tasks by writing Python code" in first["systemInstruction"]["parts"][0]["text"]
    # The second request answers the call by id and name with the output.
    second = fake.contents(1)
    assert [c["role"] for c in second] == ["user", "model", "user"]
    answer = second[2]["parts"][0]["functionResponse"]
    assert answer["id"] == "c1" and answer["name"] == "run_python"
    assert "42" in answer["response"]["output"] and answer["response"]["outcome"] == "OK"


async def test_client_mode_fails_then_fixes_and_history_is_sent_back_exactly(fake, local_executor):
    signature = b"\x00\xffopaque-thought-signature"
    fake.add(
        response(
            [
                text_part("Let me compute.", thought=True, signature=b"t1"),
                function_call_part("print(1 / 0)", call_id="a", signature=signature),
            ]
        ),
        function_call_response("print(1 / 1)", call_id="b"),
        text_response("It is 1.0."),
    )
    result = await Orchestrator(gemini(fake), local_executor).run("Divide one by one.")

    assert result.status is RunStatus.SOLVED and result.retries == 1
    assert result.attempts[0].result.error_type == "ZeroDivisionError"
    assert result.attempts[1].result.stdout == "1.0\n"
    third = fake.contents(2)
    assert [c["role"] for c in third] == ["user", "model", "user", "model", "user"]
    # The first model turn goes back exactly as received: thought, signatures, call.
    assert third[1]["parts"] == [
        {"text": "Let me compute.", "thought": True, "thoughtSignature": base64.urlsafe_b64encode(b"t1").decode()},
        {
            "functionCall": {"id": "a", "args": {"code": "print(1 / 0)"}, "name": "run_python"},
            "thoughtSignature": base64.urlsafe_b64encode(signature).decode(),
        },
    ]
    failed = third[2]["parts"][0]["functionResponse"]
    assert failed["id"] == "a" and "ZeroDivisionError" in failed["response"]["error"]
    assert failed["response"]["outcome"] == "FAILED"
    assert third[4]["parts"][0]["functionResponse"]["id"] == "b"


async def test_fenced_code_in_text_gets_text_feedback(fake, local_executor):
    fake.add(text_response("```python\nprint(2 + 2)\n```"), text_response("Four."))
    result = await Orchestrator(gemini(fake), local_executor).run("2+2?")

    assert result.status is RunStatus.SOLVED and result.attempts[0].result.stdout == "4\n"
    feedback = fake.contents(1)[2]
    assert feedback["role"] == "user" and "functionResponse" not in feedback["parts"][0]
    assert "4" in feedback["parts"][0]["text"]


async def test_several_calls_in_one_turn_each_get_a_response(fake, local_executor):
    fake.add(
        response([function_call_part("x = 2", call_id="p"), function_call_part("print(x * 21)", call_id="q")]),
        text_response("42"),
    )
    result = await Orchestrator(gemini(fake), local_executor).run("two calls")

    assert result.attempts[0].result.stdout == "42\n"
    answers = [p["functionResponse"] for p in fake.contents(1)[2]["parts"]]
    assert [a["id"] for a in answers] == ["p", "q"]
    assert "42" in answers[0]["response"]["output"]
    assert "ran together" in answers[1]["response"]["output"]


async def test_summary_request_forbids_calls_but_keeps_the_declaration(fake, local_executor):
    fake.add(
        *[function_call_response(f"raise ValueError('no {i}')", call_id=f"c{i}") for i in range(2)],
        text_response("It kept failing with ValueError."),
    )
    result = await Orchestrator(gemini(fake), local_executor, max_retries=1).run("fail please")

    assert result.status is RunStatus.FAILED and len(result.attempts) == 2
    last = fake.requests[-1].body
    assert last["toolConfig"]["functionCallingConfig"]["mode"] == "NONE"
    assert last["tools"][0]["functionDeclarations"][0]["name"] == "run_python"
    roles = [c["role"] for c in last["contents"]]
    assert roles == ["user", "model", "user", "model", "user"]  # failure feedback and summary request merged


async def test_input_files_are_described_in_client_mode(fake, local_executor):
    fake.add(function_call_response("print(open('data.csv').read().count(','))"), text_response("2 commas"))
    result = await Orchestrator(gemini(fake), local_executor).run(
        "count commas", files=[InputFile("data.csv", b"a,b,c\n")]
    )

    assert result.attempts[0].result.stdout == "2\n"
    parts = fake.contents(0)[0]["parts"]
    assert all("inlineData" not in p for p in parts)
    assert "data.csv (6 bytes)" in parts[-1]["text"]


def test_turn_raw_survives_a_json_round_trip():
    content = types.Content(
        role="model",
        parts=[
            types.Part(
                function_call=types.FunctionCall(id="z", name="run_python", args={"code": "1"}),
                thought_signature=b"\x01\x02",
            )
        ],
    )
    conversation = Conversation(messages=[UserMessage(text="hi"), ModelMessage(turn=parse_content(content))])
    restored = Conversation.from_json(json.loads(json.dumps(conversation.to_json())))
    assert to_contents(restored)[1] == content


def test_turns_from_other_models_are_rebuilt():
    turn = tool_call_turn("print(1)", call_id="k", text="run this")
    conversation = Conversation(
        messages=[
            UserMessage(text="hi"),
            ModelMessage(turn=turn),
            ExecutionMessage(result=ExecutionResult(outcome=Outcome.OK, stdout="1"), feedback="1"),
        ]
    )
    model, answer = to_contents(conversation)[1:]
    assert model.parts[0].text == "run this" and model.parts[1].function_call.id == "k"
    assert answer.parts[0].function_response.id == "k"


# -- server mode --------------------------------------------------------------------


async def test_server_mode_parses_code_result_and_image(fake, local_executor):
    fake.add(
        response(
            [
                text_part("I'll plot it."),
                {"executableCode": {"language": "PYTHON", "code": "print(1/0)"}},
                {
                    "codeExecutionResult": {
                        "outcome": "OUTCOME_FAILED",
                        "output": "Traceback (most recent call last):\nZeroDivisionError: division by zero",
                    }
                },
                {"executableCode": {"language": "PYTHON", "code": "import matplotlib\nprint('plotted')"}},
                {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "plotted\n"}},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
                text_part("Here is the plot."),
            ],
            usage_metadata=usage(100, 20, tool_use=300),
        ),
    )
    result = await Orchestrator(gemini(fake, mode="server"), local_executor).run("plot")

    assert fake.requests[0].body["tools"] == [{"codeExecution": {}}]
    assert "built-in code execution" in fake.requests[0].body["systemInstruction"]["parts"][0]["text"]
    assert result.status is RunStatus.SOLVED and result.model == "gemini-server:gemini-2.5-flash"
    first, second = result.attempts
    assert first.remote and second.remote and [first.step, second.step] == [1, 2]
    assert first.result.outcome is Outcome.FAILED and first.result.error_type == "ZeroDivisionError"
    assert first.result.error_message == "division by zero"
    assert second.ok and second.result.stdout == "plotted\n" and second.code.endswith("print('plotted')")
    [figure] = result.artifacts
    assert figure.data == PNG and figure.mime_type == "image/png" and figure.name.endswith(".png")
    assert result.summary == "I'll plot it.\n\nHere is the plot."  # text around code stays two paragraphs
    assert result.usage.tool_tokens == 300
    assert len(fake.requests) == 1  # nothing ran locally, nothing was sent back


async def test_server_mode_maps_deadline_exceeded(fake, local_executor):
    fake.add(
        server_execution_response("while True: pass", "", outcome="OUTCOME_DEADLINE_EXCEEDED", text="It timed out.")
    )
    result = await Orchestrator(gemini(fake, mode="server"), local_executor).run("loop")

    assert result.attempts[0].result.outcome is Outcome.DEADLINE_EXCEEDED
    assert result.status is RunStatus.FAILED and result.error is None


async def test_server_mode_sends_files_inline_and_checks_their_size(fake, local_executor):
    fake.add(server_execution_response("print(len(open('d.csv').read()))", "6\n", text="6 characters"))
    model = gemini(fake, mode="server", max_file_bytes=64)
    result = await Orchestrator(model, local_executor).run("read it", files=[InputFile("d.csv", b"a,b,c\n")])

    assert result.status is RunStatus.SOLVED
    parts = fake.contents(0)[0]["parts"]
    assert parts[1] == {"text": "File d.csv:"}
    blob = parts[2]["inlineData"]
    assert (blob.get("mimeType") or blob.get("mime_type")) == "text/csv"  # the SDK sends either spelling
    assert base64.b64decode(parts[2]["inlineData"]["data"]) == b"a,b,c\n"

    too_big = await Orchestrator(model, local_executor).run("again", files=[InputFile("big.csv", b"x" * 65)])
    assert too_big.status is RunStatus.FAILED
    assert "big.csv" in too_big.error and "65 bytes" in too_big.error and "max_file_bytes" in too_big.error
    binary = await Orchestrator(model, local_executor).run("bin", files=[InputFile("b.csv", b"\xff\xfe\x00")])
    assert "not text" in binary.error
    assert len(fake.requests) == 1  # bad files never reached the server


# -- errors and retries -----------------------------------------------------------------


async def test_429_twice_then_success_is_retried_and_counted(fake, local_executor):
    fake.add(Fault(429), Fault(429, retry_after_s=0.001), function_call_response("print(3)"), text_response("3"))
    model = gemini(fake)
    result = await Orchestrator(model, local_executor).run("three")

    assert result.status is RunStatus.SOLVED
    assert len(fake.requests) == 4
    assert model.stats.retries == 2 and model.stats.requests == 4 and model.stats.failures == 0
    assert result.usage.requests == 4  # the retried requests are counted in the run's usage


async def test_401_fails_fast_with_a_clear_message(fake, local_executor):
    fake.add(Fault(401, "Request had invalid authentication credentials."))
    model = gemini(fake)
    result = await Orchestrator(model, local_executor).run("hi")

    assert result.status is RunStatus.FAILED
    assert result.error.startswith("ModelAuthError") and "GEMINI_API_KEY" in result.error
    assert len(fake.requests) == 1 and model.stats.retries == 0


async def test_invalid_key_400_is_an_auth_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "wrong-key")
    with FakeGeminiServer([text_response("never")], expected_key="right-key") as server:
        model = GeminiModel("gemini-2.5-flash", base_url=server.url, retry=FAST)
        with pytest.raises(ModelAuthError) as caught:
            await model.generate(ask("hi"), [RUN_PYTHON])
    assert "GEMINI_API_KEY" in str(caught.value) and caught.value.status_code == 400
    assert len(server.requests) == 1 and server.pending == 1


def test_missing_key_names_both_variables():
    with pytest.raises(ModelAuthError, match=r"GEMINI_API_KEY.*GOOGLE_API_KEY"):
        GeminiModel(env={})


def test_key_precedence_follows_the_sdk():
    model = GeminiModel(env={"GEMINI_API_KEY": "g", "GOOGLE_API_KEY": "o"})
    assert model.key_source == "GOOGLE_API_KEY"
    assert GeminiModel(api_key="x", env={"GEMINI_API_KEY": "g"}).key_source == "the api_key argument"
    assert "x" not in repr(GeminiModel(api_key="x-secret", env={}))


async def test_500_forever_ends_the_run_failed_with_the_error_recorded(fake, local_executor):
    fake.add(*[Fault(500, "backend exploded")] * FAST.attempts)
    model = gemini(fake)
    result = await Orchestrator(model, local_executor).run("hi")

    assert result.status is RunStatus.FAILED and result.attempts == []
    assert "HTTP 500" in result.error and "backend exploded" in result.error and "4 attempts" in result.error
    assert len(fake.requests) == FAST.attempts and fake.pending == 0
    assert model.stats.failures == 1


async def test_rate_limit_after_retries_is_a_rate_limit_error(fake):
    fake.add(*[Fault(429)] * 2)
    model = gemini(fake, retry=RetryPolicy(attempts=2, initial_delay_s=0.001, max_delay_s=0.001))
    with pytest.raises(RateLimitError) as caught:
        await model.generate(ask("hi"))
    assert caught.value.retryable and caught.value.status_code == 429


@pytest.mark.parametrize(
    "fault",
    [Malformed(), Disconnect(), Fault(503), Delay(2.0, text_response("late"))],
    ids=["malformed", "disconnect", "503", "timeout"],
)
async def test_transient_faults_are_retried(fake, fault):
    fake.add(fault, text_response("fine"))
    model = gemini(fake, retry=RetryPolicy(attempts=3, initial_delay_s=0.001, max_delay_s=0.001, timeout_s=0.5))
    turn = await model.generate(ask("hi"))
    assert turn.text == "fine" and model.stats.retries == 1


async def test_malformed_function_call_is_asked_again(fake):
    fake.add(response([], finish_reason="MALFORMED_FUNCTION_CALL"), function_call_response("print(1)"))
    model = gemini(fake)
    turn = await model.generate(ask("hi"), [RUN_PYTHON])
    assert turn.code_blocks[0].code == "print(1)" and model.stats.retries == 1 and turn.usage.requests == 2


async def test_non_retryable_client_error_is_not_retried(fake):
    fake.add(Fault(400, "Invalid JSON payload received."), text_response("never"))
    model = gemini(fake)
    with pytest.raises(ModelError) as caught:
        await model.generate(ask("hi"))
    assert not caught.value.retryable and "Invalid JSON payload" in str(caught.value)
    assert len(fake.requests) == 1


# -- usage and cost --------------------------------------------------------------------------


async def test_usage_is_summed_over_a_multi_step_run(fake, local_executor):
    fake.add(
        function_call_response("print(1 / 0)", usage_metadata=usage(100, 10, tool_use=5, thoughts=7)),
        function_call_response("print(1)", usage_metadata=usage(200, 20, tool_use=6, thoughts=8)),
        text_response("ok", usage_metadata=usage(300, 30, thoughts=9)),
    )
    prices = PriceTable({"gemini-2.5-flash": ModelPrice(input_per_mtok=1.0, output_per_mtok=10.0)})
    result = await Orchestrator(gemini(fake, prices=prices), local_executor).run("sum")

    u = result.usage
    assert (u.input_tokens, u.output_tokens, u.tool_tokens, u.thoughts_tokens, u.requests) == (600, 60, 11, 24, 3)
    assert u.cost_usd == pytest.approx(((600 + 11) * 1.0 + (60 + 24) * 10.0) / 1e6)


async def test_unknown_model_has_no_cost_estimate(fake):
    fake.add(text_response("hi"))
    model = GeminiModel("my-tuned-model", api_key=KEY, base_url=fake.url, retry=FAST)
    turn = await model.generate(ask("hi"))
    assert turn.usage.cost_usd is None and turn.usage.input_tokens == 10


# -- streaming -----------------------------------------------------------------------------------


async def test_stream_deltas_arrive_in_order_then_the_turn(fake):
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}]}
        for piece in ["The ", "answer ", "is "]
    ] + [
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "42.", "thoughtSignature": base64.b64encode(b"sig").decode()}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": usage(7, 4),
        }
    ]
    fake.add(Stream(chunks, delay_s=0.01))
    model = gemini(fake)
    assert isinstance(model, StreamingModel)
    pieces = [p async for p in model.generate_stream(ask("q"))]

    assert pieces[:-1] == ["The ", "answer ", "is ", "42."]
    turn = pieces[-1]
    assert turn.text == "The answer is 42." and turn.usage.input_tokens == 7 and turn.finish_reason == "STOP"
    # Plain text pieces are joined; the part carrying a signature is kept whole.
    assert [p.get("text") for p in turn.raw["content"]["parts"]] == ["The answer is ", "42."]
    assert fake.requests[0].path.endswith(":streamGenerateContent") and fake.requests[0].query == {"alt": "sse"}


async def test_streaming_run_emits_text_deltas_and_runs_streamed_calls(fake, local_executor):
    fake.add(
        response([text_part("Computing now."), function_call_part("print(5 * 5)", call_id="s1")]),
        text_response("Twenty-five is the result."),
    )
    orch = Orchestrator(gemini(fake), local_executor, stream_text=True)
    seen = [e async for e in orch.stream("5*5?")]

    deltas = [e.text for e in seen if isinstance(e, events.TextDelta)]
    assert "".join(deltas) == "Computing now.Twenty-five is the result." and len(deltas) >= 4
    done = seen[-1].result
    assert done.status is RunStatus.SOLVED and done.attempts[0].result.stdout == "25\n"
    assert fake.contents(1)[2]["parts"][0]["functionResponse"]["id"] == "s1"


async def test_streamed_server_mode_turn_is_parsed_like_a_whole_one(fake, local_executor):
    fake.add(server_execution_response("print('hi there')", "hi there\n", text="It printed a greeting.", images=[PNG]))
    orch = Orchestrator(gemini(fake, mode="server"), local_executor, stream_text=True)
    seen = [e async for e in orch.stream("greet")]

    result = seen[-1].result
    assert fake.requests[0].path.endswith(":streamGenerateContent")
    assert result.status is RunStatus.SOLVED and result.attempts[0].remote
    assert result.attempts[0].result.stdout == "hi there\n" and result.artifacts[0].data == PNG
    assert "".join(e.text for e in seen if isinstance(e, events.TextDelta)) == "It printed a greeting."


async def test_stream_open_is_retried_but_a_broken_stream_is_an_error(fake):
    fake.add(Fault(503), text_response("recovered"))
    model = gemini(fake)
    pieces = [p async for p in model.generate_stream(ask("q"))]
    assert pieces[-1].text == "recovered" and model.stats.retries == 1

    fake.add(
        Stream(
            [{"candidates": [{"content": {"role": "model", "parts": [{"text": "partial"}]}}]}, b"data: {broken\r\n\r\n"]
        )
    )
    got = []
    with pytest.raises(ModelError, match="broke off"):
        async for piece in model.generate_stream(ask("q")):
            got.append(piece)
    assert got == ["partial"] and len(fake.requests) == 3  # no retry once text was shown


# -- secrets --------------------------------------------------------------------------------------


async def test_key_never_appears_in_logs_results_errors_or_the_child(monkeypatch, local_executor):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    stream = io.StringIO()
    configure_logging(json_lines=True, level="debug", stream=stream)
    try:
        with FakeGeminiServer(
            [
                Fault(503, f"echoing your key {KEY}"),
                function_call_response("import os\nprint(dict(os.environ))"),
                text_response("done"),
                Fault(401),
            ]
        ) as server:
            model = GeminiModel("gemini-2.5-flash", base_url=server.url, retry=FAST)
            result = await Orchestrator(model, local_executor).run("show env")
            failed = await Orchestrator(model, local_executor).run("again")
    finally:
        structlog.reset_defaults()
    assert result.status is RunStatus.SOLVED and failed.status is RunStatus.FAILED
    assert "GEMINI_API_KEY" in failed.error
    everything = stream.getvalue() + json.dumps(result.to_json()) + json.dumps(failed.to_json())
    assert "model_retry" in stream.getvalue()
    assert KEY not in everything
    assert "GEMINI_API_KEY" not in result.attempts[0].result.stdout
    # The fake saw the key, but kept only its fingerprint.
    assert server.requests[0].key_fingerprint and KEY not in repr(server.requests)
