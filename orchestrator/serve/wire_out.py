"""codeloop's loop events and results as Gemini response JSON (REST, camelCase).

:class:`ResponseBuilder` turns the loop's events into the parts Gemini's code
execution returns, in its order: the model's text, ``executableCode``,
``codeExecutionResult``, an ``inlineData`` image for each figure, and the
final text. Usage follows Gemini's split: ``promptTokenCount`` is the first
model request's input, ``toolUsePromptTokenCount`` the input of the requests
that carried execution results back, ``candidatesTokenCount`` all output.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from executors.base import ExecutionResult, Outcome

from .. import events as ev
from ..extract import extract_code
from ..types import RUN_PYTHON, CodeBlock, ModelTurn, Usage

CUT_OFF = frozenset({"length", "MAX_TOKENS", "FinishReason.MAX_TOKENS"})
OUTCOME_NAMES = {Outcome.OK: "OUTCOME_OK", Outcome.DEADLINE_EXCEEDED: "OUTCOME_DEADLINE_EXCEEDED"}
_FENCE_MARK = re.compile(r"^[ \t]*(```|~~~)[^\n]*$", re.MULTILINE)


def text_part(text: str) -> dict[str, Any]:
    return {"text": text}


def code_part(code: str) -> dict[str, Any]:
    return {"executableCode": {"language": "PYTHON", "code": code}}


def result_part(result: ExecutionResult) -> dict[str, Any]:
    return {
        "codeExecutionResult": {
            "outcome": OUTCOME_NAMES.get(result.outcome, "OUTCOME_FAILED"),
            "output": result_output(result),
        }
    }


def result_output(result: ExecutionResult) -> str:
    """What the code printed; for a failure, the error after it (the
    traceback when there is one, else the error's type and message)."""
    if result.ok:
        return result.stdout
    error = result.stderr or result.traceback or ""
    if not error.strip():
        what = result.error_type or result.outcome.value
        error = f"{what}: {result.error_message}" if result.error_message else what
    return f"{result.stdout}{'' if not result.stdout or result.stdout.endswith(chr(10)) else chr(10)}{error}"


def image_parts(result: ExecutionResult) -> list[dict[str, Any]]:
    """One inlineData part per image the code produced (its figures)."""
    return [
        {"inlineData": {"mimeType": a.mime_type, "data": base64.b64encode(a.data).decode("ascii")}}
        for a in result.artifacts
        if a.mime_type.startswith("image/") and not a.truncated and a.data
    ]


def prose(turn: ModelTurn) -> str:
    """A turn's words without the code it ran (that code becomes its own
    executableCode part). A tool call written as text is all code."""
    blocks: Sequence[CodeBlock] = turn.code_blocks or extract_code(turn.text, (RUN_PYTHON.name,))
    if any(b.source == "text_tool_call" for b in blocks):
        return ""
    text = turn.text
    for block in blocks:
        if block.source == "fence":
            text = text.replace(block.code.rstrip("\n"), "")
    if any(b.source == "fence" for b in blocks):
        text = _FENCE_MARK.sub("", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def usage_metadata(first_input: int, later_input: int, output: int, thoughts: int = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "promptTokenCount": first_input,
        "candidatesTokenCount": output,
        "totalTokenCount": first_input + later_input + output + thoughts,
    }
    if later_input:
        meta["toolUsePromptTokenCount"] = later_input
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def finish_reason(turn_reason: str | None) -> str:
    return "MAX_TOKENS" if turn_reason in CUT_OFF else "STOP"


def response_body(
    parts: list[dict[str, Any]],
    *,
    model: str,
    response_id: str,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``GenerateContentResponse``: the whole answer, or one stream chunk
    (``finish`` and ``usage`` on the last chunk only)."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": response_id}
    if usage is not None:
        body["usageMetadata"] = usage
    return body


@dataclass
class ResponseBuilder:
    """Feed it the loop's events in order; it returns each event's parts and
    keeps what the last chunk needs (usage, finish reason, a model failure)."""

    first_input: int = 0
    later_input: int = 0
    output: int = 0
    thoughts: int = 0
    requests: int = 0
    last_reason: str | None = None
    awaiting_model: bool = False  # a model request had no answer yet
    model_failed: bool = False
    executor_failed: bool = False  # the sandbox broke (not the code): the run ended there
    error: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, event: ev.Event) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        if isinstance(event, ev.ModelRequest):
            self.awaiting_model = True
        elif isinstance(event, ev.ModelResponse):
            self.awaiting_model = False
            self.add_usage(event.turn.usage)
            self.last_reason = event.turn.finish_reason
            text = prose(event.turn)
            if text:
                new.append(text_part(text))
        elif isinstance(event, ev.CodeExtracted):
            new.append(code_part(event.code))
        elif isinstance(event, ev.ExecutionFinished) and event.attempt is not None:
            self.executor_failed = event.attempt.result.outcome is Outcome.SANDBOX_ERROR
            if event.attempt.remote:  # the backend ran it (a Gemini backend in server mode)
                new.append(code_part(event.attempt.code))
            new.append(result_part(event.attempt.result))
            new += image_parts(event.attempt.result)
        elif isinstance(event, ev.Done) and event.result is not None:
            # A request with no answer before Done: the model failed, not the code.
            self.model_failed = self.awaiting_model and event.result.error is not None
            self.error = event.result.error
        self.parts += new
        return new

    def add_usage(self, usage: Usage) -> None:
        if self.requests == 0:
            self.first_input += usage.input_tokens
        else:
            self.later_input += usage.input_tokens
        self.later_input += usage.tool_tokens
        self.output += usage.output_tokens
        self.thoughts += usage.thoughts_tokens
        self.requests += max(usage.requests, 1)

    def usage(self) -> dict[str, Any]:
        return usage_metadata(self.first_input, self.later_input, self.output, self.thoughts)

    def finish(self) -> str:
        return finish_reason(self.last_reason)
