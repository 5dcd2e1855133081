"""Gemini's answers as turns: text, function calls, and the code, results
and figures of its server-side code execution (as remote attempts)."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence
from typing import Any

from google.genai import types

from executors.base import Artifact, ExecutionResult, Isolation, Outcome

from ..types import Attempt, CodeBlock, ModelTurn, Usage

SERVER_OUTCOMES = {
    "OUTCOME_OK": Outcome.OK,
    "OUTCOME_FAILED": Outcome.FAILED,
    "OUTCOME_DEADLINE_EXCEEDED": Outcome.DEADLINE_EXCEEDED,
}

EXECUTOR_NAME = "gemini-server"


def parse_content(content: types.Content) -> ModelTurn:
    """The text, code blocks, server-side attempts and raw content of a turn."""
    text: list[str] = []
    blocks: list[CodeBlock] = []
    executed: list[Attempt] = []
    pending_code: str | None = None
    figures = 0
    waiting: list[Artifact] = []  # images seen before the result they belong to
    previous_was_other = False
    for i, part in enumerate(content.parts or []):
        if part.function_call:
            call = part.function_call
            code = (call.args or {}).get("code")
            if call.name == "run_python" and isinstance(code, str):
                blocks.append(CodeBlock(code=code, source="tool_call", call_id=call.id or f"call-{i}"))
        elif part.executable_code:
            if pending_code is not None:
                executed.append(_remote_attempt(pending_code, None))
            pending_code = part.executable_code.code or ""
            blocks.append(CodeBlock(code=pending_code, source="server"))
        elif part.code_execution_result:
            executed.append(_remote_attempt(pending_code or "", part.code_execution_result))
            executed[-1].result.artifacts += waiting
            waiting = []
            pending_code = None
        elif part.inline_data and (part.inline_data.mime_type or "").startswith("image/"):
            ext = mimetypes.guess_extension(part.inline_data.mime_type or "") or ".bin"
            figures += 1
            image = Artifact.of(f"figure-{figures}{ext}", part.inline_data.data or b"", part.inline_data.mime_type)
            if executed and pending_code is None:
                executed[-1].result.artifacts.append(image)
            else:
                waiting.append(image)
        elif part.text and not part.thought:
            if text and previous_was_other:  # text around code is separate paragraphs, not one sentence
                text.append("\n\n")
            text.append(part.text)
        previous_was_other = not (part.text and not part.thought)
    if pending_code is not None:
        executed.append(_remote_attempt(pending_code, None))
    if executed and waiting:
        executed[-1].result.artifacts += waiting
    return ModelTurn(
        text="".join(text),
        code_blocks=blocks,
        raw={"provider": "gemini", "content": content.model_dump(mode="json", exclude_none=True)},
        executed=executed,
    )


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)): ?(.*)$")


def _remote_attempt(code: str, result: types.CodeExecutionResult | None) -> Attempt:
    if result is None:
        execution = ExecutionResult(
            outcome=Outcome.FAILED,
            error_message="Gemini returned no result for this code",
            executor=EXECUTOR_NAME,
            isolation=Isolation.REMOTE,
        )
        return Attempt(code=code, result=execution, remote=True)
    outcome = SERVER_OUTCOMES.get(enum_name(result.outcome) or "", Outcome.FAILED)
    output = result.output or ""
    execution = ExecutionResult(outcome=outcome, executor=EXECUTOR_NAME, isolation=Isolation.REMOTE)
    if outcome is Outcome.FAILED:
        execution.stderr = output
        last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "")
        match = _ERROR_LINE.match(last.strip())
        execution.error_type = match[1] if match else None
        execution.error_message = match[2] if match else (last.strip() or "the code failed")
        if "Traceback" in output:
            execution.traceback = output
    else:
        execution.stdout = output
        if outcome is Outcome.DEADLINE_EXCEEDED:
            execution.error_message = "the code ran past Gemini's execution time limit"
    return Attempt(code=code, result=execution, remote=True)


def usage_from(meta: Any, requests: int = 1) -> Usage:
    if meta is None:
        return Usage(requests=requests)
    return Usage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=meta.candidates_token_count or 0,
        tool_tokens=meta.tool_use_prompt_token_count or 0,
        thoughts_tokens=meta.thoughts_token_count or 0,
        requests=requests,
        cache_read_tokens=meta.cached_content_token_count or 0,
    )


def merge_text_parts(parts: Sequence[types.Part]) -> list[types.Part]:
    """Join the text pieces a stream delivers into whole parts. Parts with a
    thought signature or anything besides text are kept exactly as sent."""
    merged: list[types.Part] = []
    for part in parts:
        plain = _plain_text(part)
        if plain and merged and _plain_text(merged[-1]) and bool(merged[-1].thought) == bool(part.thought):
            merged[-1] = merged[-1].model_copy(update={"text": (merged[-1].text or "") + (part.text or "")})
        else:
            merged.append(part)
    return merged


def _plain_text(part: types.Part) -> bool:
    fields = part.model_dump(exclude_none=True)
    return part.text is not None and set(fields) <= {"text", "thought"}


def enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)


def block_reason(response: types.GenerateContentResponse) -> str:
    feedback = response.prompt_feedback
    if feedback and feedback.block_reason:
        detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        return f"prompt blocked, {enum_name(feedback.block_reason)}{detail}"
    return "no candidates in the response"
