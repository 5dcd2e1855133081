"""The wire format of ``codeloop serve``: Gemini JSON into codeloop's types and back."""

from __future__ import annotations

import base64

import pytest

from executors.base import Artifact, ExecutionResult, Outcome
from orchestrator import events as ev
from orchestrator.prompts import Prompts
from orchestrator.serve.errors import ApiError
from orchestrator.serve.runs import loop_prompts
from orchestrator.serve.wire_in import parse_count_tokens, parse_generate
from orchestrator.serve.wire_out import (
    ResponseBuilder,
    prose,
    result_output,
    result_part,
)
from orchestrator.types import (
    Attempt,
    CodeBlock,
    ExecutionMessage,
    ModelMessage,
    ModelTurn,
    RunResult,
    RunStatus,
    Usage,
    UserMessage,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_model_turn_with_two_programs_becomes_the_exchange_the_loop_would_have_had():
    request = parse_generate(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "Compute."}]},
                {
                    "role": "model",
                    "parts": [
                        {"text": "First try."},
                        {"executableCode": {"language": "PYTHON", "code": "print(1/0)"}},
                        {
                            "codeExecutionResult": {
                                "outcome": "OUTCOME_FAILED",
                                "output": "ZeroDivisionError: division by zero",
                            }
                        },
                        {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1\n"}},
                        {"inlineData": {"mimeType": "image/png", "data": b64(b"\x89PNG")}},
                        {"text": "It is 1."},
                    ],
                },
                {"role": "user", "parts": [{"text": "Why?"}]},
            ]
        }
    )
    kinds = [type(m) for m in request.history]
    assert kinds == [UserMessage, ModelMessage, ExecutionMessage, ModelMessage, ExecutionMessage, ModelMessage]
    first, failed, second, ok, answer = request.history[1:]
    assert first.turn.text == "First try.\n\n```python\nprint(1/0)\n```"
    assert first.turn.code_blocks[0].code == "print(1/0)"
    assert failed.result.outcome is Outcome.FAILED and "ZeroDivisionError" in failed.feedback
    assert second.turn.text == "```python\nprint(1)\n```"
    assert ok.result.stdout == "1\n" and [a.mime_type for a in ok.result.artifacts] == ["image/png"]
    assert answer.turn.text == "It is 1."
    assert request.prompt == "Why?" and not request.code_execution


def test_files_are_named_by_display_name_caption_or_type_and_later_turns_replace_by_name():
    request = parse_generate(
        {
            "contents": [
                {
                    "parts": [
                        {"text": "File sales.csv:"},
                        {"inlineData": {"mimeType": "text/csv", "data": b64(b"a\n1\n")}},
                        {"inlineData": {"mimeType": "image/jpeg", "data": b64(b"\xff\xd8")}},
                        {"inlineData": {"mimeType": "text/plain", "displayName": "notes.txt", "data": b64(b"n")}},
                        {"inlineData": {"mimeType": "text/plain", "displayName": "notes.txt", "data": b64(b"m")}},
                        {"text": "Look."},
                    ]
                },
                {"role": "model", "parts": [{"text": "Seen."}]},
                {
                    "parts": [
                        {"text": "File sales.csv:"},
                        {"inlineData": {"mimeType": "text/csv", "data": b64(b"a\n2\n")}},
                        {"text": "Updated."},
                    ]
                },
            ]
        }
    )
    assert {f.name: f.data for f in request.files} == {
        "sales.csv": b"a\n2\n",
        "input_2.jpg": b"\xff\xd8",
        "notes.txt": b"n",
        "notes_2.txt": b"m",
    }
    assert request.history[0].text == "Look."  # the captions named files; they are not text
    assert request.prompt == "Updated."


def test_a_caption_followed_by_text_stays_text_and_unsafe_names_are_not_used():
    request = parse_generate(
        {
            "contents": [
                {
                    "parts": [
                        {"text": "File x.csv:"},
                        {"text": "no file here"},
                        {"inlineData": {"mimeType": "text/csv", "displayName": "../../etc/passwd", "data": b64(b"x")}},
                    ]
                }
            ]
        }
    )
    assert request.prompt == "File x.csv:\nno file here"
    assert [f.name for f in request.files] == ["input_1.csv"]


def test_generation_config_tools_and_system_are_read():
    request = parse_generate(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "tools": [{"code_execution": {}}],
            "system_instruction": {"parts": [{"text": "Be brief."}, {"text": "Use SI units."}]},
            "generation_config": {"temperature": 0.2, "max_output_tokens": 64, "topP": 0.9},
        }
    )
    assert request.code_execution and request.system == "Be brief.\nUse SI units."
    assert (request.temperature, request.max_tokens) == (0.2, 64)


def test_count_tokens_accepts_a_whole_generate_request():
    request = parse_count_tokens(
        {"generateContentRequest": {"model": "models/x", "contents": [{"parts": [{"text": "hi"}]}]}}
    )
    assert request.prompt == "hi"
    with pytest.raises(ApiError, match="generateContentRequest"):
        parse_count_tokens({"contents": [{"parts": [{"text": "hi"}]}], "model": "x"})


def test_prose_drops_fenced_code_and_tool_calls_written_as_text():
    assert prose(ModelTurn(text="Let me see.\n\n```python\nprint(1)\n```\n\nDone soon.")) == "Let me see.\n\nDone soon."
    assert prose(ModelTurn(text="Calling.", code_blocks=[CodeBlock("print(1)", source="tool_call")])) == "Calling."
    assert (
        prose(ModelTurn(text='<tool_call>{"name": "run_python", "arguments": {"code": "print(1)"}}</tool_call>')) == ""
    )
    assert prose(ModelTurn(text="No code, just words.")) == "No code, just words."


@pytest.mark.parametrize(
    ("result", "outcome", "output"),
    [
        (ExecutionResult(Outcome.OK, stdout="3\n"), "OUTCOME_OK", "3\n"),
        (
            ExecutionResult(Outcome.FAILED, stdout="before\n", stderr="Traceback...\nValueError: x\n"),
            "OUTCOME_FAILED",
            "before\nTraceback...\nValueError: x\n",
        ),
        (
            ExecutionResult(Outcome.DEADLINE_EXCEEDED, error_message="ran past 1 s"),
            "OUTCOME_DEADLINE_EXCEEDED",
            "DEADLINE_EXCEEDED: ran past 1 s",
        ),
        (
            ExecutionResult(Outcome.MEMORY_EXCEEDED, error_type="MemoryError", error_message="over 2 GB"),
            "OUTCOME_FAILED",
            "MemoryError: over 2 GB",
        ),
    ],
)
def test_results_map_to_gemini_outcomes(result, outcome, output):
    assert result_part(result) == {"codeExecutionResult": {"outcome": outcome, "output": output}}
    assert result_output(result) == output


def test_the_builder_orders_parts_and_splits_usage_like_gemini():
    builder = ResponseBuilder()
    turn1 = ModelTurn(
        text="Computing.\n```python\nprint(2)\n```", usage=Usage(input_tokens=50, output_tokens=9, requests=1)
    )
    figure = Artifact.of("figure_1.png", b"\x89PNG", "image/png")
    attempt = Attempt(
        "print(2)",
        ExecutionResult(Outcome.OK, stdout="2\n", artifacts=[figure, Artifact.of("out.csv", b"a", "text/csv")]),
        step=1,
    )
    turn2 = ModelTurn(text="Two.", usage=Usage(input_tokens=70, output_tokens=2, requests=1), finish_reason="stop")
    events = [
        ev.ModelRequest("r"),
        ev.ModelResponse("r", turn=turn1),
        ev.CodeExtracted("r", code="print(2)"),
        ev.ExecutionStarted("r"),
        ev.ExecutionFinished("r", attempt=attempt),
        ev.ModelRequest("r"),
        ev.ModelResponse("r", turn=turn2),
        ev.Summary("r", text="Two."),
        ev.Done("r", result=RunResult(prompt="p", summary="Two.", status=RunStatus.SOLVED)),
    ]
    parts = [p for e in events for p in builder.feed(e)]
    assert [next(iter(p)) for p in parts] == ["text", "executableCode", "codeExecutionResult", "inlineData", "text"]
    assert builder.usage() == {
        "promptTokenCount": 50,
        "toolUsePromptTokenCount": 70,
        "candidatesTokenCount": 11,
        "totalTokenCount": 131,
    }
    assert builder.finish() == "STOP" and not builder.model_failed


def test_the_builder_tells_a_model_failure_from_a_failed_program():
    builder = ResponseBuilder()
    for event in (
        ev.ModelRequest("r"),
        ev.Done("r", result=RunResult(prompt="p", summary="", status=RunStatus.FAILED, error="ModelError: down")),
    ):
        builder.feed(event)
    assert builder.model_failed and builder.error == "ModelError: down"


def test_the_clients_system_text_is_added_with_its_braces_kept():
    prompts = loop_prompts(Prompts(), 'Answer as JSON like {"a": 1}.')
    from executors import Limits

    assert prompts.system(Limits()).endswith('Answer as JSON like {"a": 1}.')
    assert loop_prompts(Prompts(), "  ") == Prompts()
