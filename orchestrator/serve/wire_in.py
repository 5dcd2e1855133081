"""Gemini request JSON (REST, camelCase) into codeloop's types.

A ``GenerateContentRequest`` becomes a :class:`GenerateRequest`: the
conversation so far (earlier ``executableCode`` / ``codeExecutionResult``
parts turned back into code the model wrote and what running it gave), the
new prompt, and the ``inlineData`` files the code gets. Every problem is a 400
naming the field (``contents[1].parts[0].inlineData.data``).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from executors.base import Artifact, ExecutionResult, InputFile, Outcome

from ..types import CodeBlock, ExecutionMessage, Message, ModelMessage, ModelTurn, UserMessage
from .errors import bad_field

KNOWN_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "model"}
)
OUTCOMES = {
    "OUTCOME_OK": Outcome.OK,
    "OUTCOME_FAILED": Outcome.FAILED,
    "OUTCOME_DEADLINE_EXCEEDED": Outcome.DEADLINE_EXCEEDED,
    "OUTCOME_UNSPECIFIED": Outcome.FAILED,
}
# codeloop's GeminiModel (server mode) captions each inline file with its name.
_CAPTION = re.compile(r"^File (?P<name>[^\s/\\]+):$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
_EXTENSIONS = {
    "text/csv": ".csv",
    "text/plain": ".txt",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "application/json": ".json",
    "text/markdown": ".md",
}


@dataclass
class GenerateRequest:
    """One ``generateContent`` request. ``history`` is the conversation before
    the last user turn; ``files`` are all the files of the request (earlier
    turns' too: a chat's code may read a file sent before)."""

    prompt: str
    history: list[Message] = field(default_factory=list)
    files: list[InputFile] = field(default_factory=list)
    system: str = ""
    code_execution: bool = False
    temperature: float | None = None
    max_tokens: int | None = None


def camel_keys(value: Any) -> Any:
    """The body with snake_case keys spelled in camelCase: Google's JSON
    parsing accepts both (``inline_data``, ``mime_type``), and the SDK sends
    nested fields in either."""
    if isinstance(value, dict):
        return {
            re.sub(r"_([a-z])", lambda m: m[1].upper(), k) if isinstance(k, str) else k: camel_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def parse_generate(body: Any) -> GenerateRequest:
    if not isinstance(body, dict):
        raise bad_field("", "the request body must be a JSON object")
    body = camel_keys(body)
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise bad_field(
            unknown[0],
            "unknown field (codeloop serve reads contents, systemInstruction, tools, "
            "toolConfig, generationConfig, safetySettings)",
        )
    history, prompt, files = parse_contents(body.get("contents"))
    temperature, max_tokens = parse_generation_config(body.get("generationConfig"))
    return GenerateRequest(
        prompt=prompt,
        history=history,
        files=files,
        system=parse_system(body.get("systemInstruction")),
        code_execution=parse_tools(body.get("tools")),
        temperature=temperature,
        max_tokens=max_tokens,
    )


def parse_count_tokens(body: Any) -> GenerateRequest:
    """``countTokens`` takes ``contents`` or a whole ``generateContentRequest``."""
    if not isinstance(body, dict):
        raise bad_field("", "the request body must be a JSON object")
    body = camel_keys(body)
    if "generateContentRequest" in body:
        inner = body["generateContentRequest"]
        if isinstance(inner, dict):
            inner = {k: v for k, v in inner.items() if k != "model"}
        return parse_generate(inner)
    extra = sorted(set(body) - {"contents"})
    if extra:
        raise bad_field(extra[0], "unknown field (countTokens reads contents or generateContentRequest)")
    return parse_generate({"contents": body.get("contents")})


# -- contents -------------------------------------------------------------------


def parse_contents(contents: Any) -> tuple[list[Message], str, list[InputFile]]:
    if not isinstance(contents, list) or not contents:
        raise bad_field("contents", "must be a non-empty list of {role, parts}")
    messages: list[Message] = []
    files: dict[str, InputFile] = {}
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict):
            raise bad_field(where, "must be an object with role and parts")
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise bad_field(f"{where}.role", f"must be 'user' or 'model', got {role!r}")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise bad_field(f"{where}.parts", "must be a non-empty list")
        if role == "user":
            message = user_message(parts, where, first_number=len(files) + 1)
            files.update((f.name, f) for f in message.files)
            messages.append(message)
        else:
            messages.extend(model_messages(parts, where))
    last = messages[-1]
    if not isinstance(last, UserMessage):
        raise bad_field(f"contents[{len(contents) - 1}].role", "the last content must be the user's turn")
    if not last.text.strip() and not last.files:
        raise bad_field(f"contents[{len(contents) - 1}].parts", "the last user turn has no text and no file")
    return messages[:-1], last.text, list(files.values())


def user_message(parts: list[Any], where: str, first_number: int = 1) -> UserMessage:
    """Text and files of a user turn. A file sent again under a name used in an
    earlier turn replaces that one (as in a chat session); names repeated
    within one turn get a number."""
    texts: list[str] = []
    files: list[InputFile] = []
    caption: str | None = None
    for kind, part, at in kinds_of(parts, where):
        if kind == "text":
            text = part["text"]
            if caption is not None:  # the caption before was ordinary text after all
                texts.append(f"File {caption}:")
            match = _CAPTION.match(text.strip())
            caption = match["name"] if match else None
            if not match:
                texts.append(text)
            continue
        if kind == "inlineData":
            name = file_name(part["inlineData"], caption, first_number + len(files), f"{at}.inlineData")
            name = unique(name, {f.name for f in files})
            files.append(InputFile(name=name, data=blob_bytes(part["inlineData"], f"{at}.inlineData")))
        elif kind != "thought":
            raise bad_field(f"{at}.{kind}", "a user turn holds text and inlineData only")
        caption = None
    if caption is not None:  # a caption with no file after it is ordinary text
        texts.append(f"File {caption}:")
    return UserMessage(text="\n".join(texts), files=files)


def model_messages(parts: list[Any], where: str) -> list[Message]:
    """A model turn of Gemini's code execution (text, code, result, images,
    text...) as the exchange the loop would have had: each piece of code is a
    model message with the code fenced, and its result an execution message."""
    out: list[Message] = []
    prose: list[str] = []
    code: str | None = None
    for kind, part, at in kinds_of(parts, where):
        if kind == "text":
            prose.append(part["text"])
        elif kind == "executableCode":
            if code is not None:  # code without a result: it was not run
                out += model_and_result(prose, code, None)
                prose = []
            code = code_of(part["executableCode"], f"{at}.executableCode")
        elif kind == "codeExecutionResult":
            if code is None:
                raise bad_field(f"{at}.codeExecutionResult", "has no executableCode part before it")
            out += model_and_result(prose, code, result_of(part["codeExecutionResult"], f"{at}.codeExecutionResult"))
            prose, code = [], None
        elif kind == "inlineData":
            figure = figure_of(part["inlineData"], f"{at}.inlineData", len(out))
            last_result = next((m.result for m in reversed(out) if isinstance(m, ExecutionMessage)), None)
            if last_result is not None:
                last_result.artifacts.append(figure)
        elif kind != "thought":
            raise bad_field(f"{at}.{kind}", "not supported by codeloop serve")
    if code is not None:
        out += model_and_result(prose, code, None)
    elif prose:
        text = "".join(prose)
        out.append(ModelMessage(turn=ModelTurn(text=text)))
    return out


def model_and_result(prose: list[str], code: str, result: ExecutionResult | None) -> list[Message]:
    text = "".join(prose).rstrip()
    text = f"{text}\n\n```python\n{code.rstrip()}\n```" if text else f"```python\n{code.rstrip()}\n```"
    blocks = [CodeBlock(code=code, source="fence")]
    turn = ModelTurn(text=text, code_blocks=blocks)
    if result is None:
        result = ExecutionResult(outcome=Outcome.FAILED, error_message="this code was not run")
    return [ModelMessage(turn=turn), ExecutionMessage(result=result, feedback=execution_text(result))]


def execution_text(result: ExecutionResult) -> str:
    """What a text-only model reads about an earlier execution."""
    output = result.stdout if result.ok else (result.stderr or result.error_message or "")
    label = {Outcome.OK: "OUTCOME_OK", Outcome.DEADLINE_EXCEEDED: "OUTCOME_DEADLINE_EXCEEDED"}.get(
        result.outcome, "OUTCOME_FAILED"
    )
    return f"Execution result ({label}):\n{output.rstrip() or '(no output)'}"


def kinds_of(parts: list[Any], where: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Each part of a turn with its kind (see :func:`part_kind`) and its place (``where.parts[j]``) for errors."""
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        yield part_kind(part, at), part, at


def part_kind(part: Any, at: str) -> str:
    """The one data field of a part: text, inlineData, executableCode..."""
    if not isinstance(part, dict):
        raise bad_field(at, "must be an object")
    if part.get("thought") is True:
        return "thought"
    data = sorted(k for k in part if k not in ("thought", "thoughtSignature", "partMetadata", "videoMetadata"))
    if len(data) != 1:
        raise bad_field(
            at, f"must hold exactly one of text, inlineData, executableCode, codeExecutionResult; got {data or 'none'}"
        )
    kind = data[0]
    if kind == "text" and not isinstance(part["text"], str):
        raise bad_field(f"{at}.text", "must be a string")
    if kind in ("inlineData", "executableCode", "codeExecutionResult") and not isinstance(part[kind], dict):
        raise bad_field(f"{at}.{kind}", "must be an object")
    return kind


def code_of(value: dict[str, Any], at: str) -> str:
    language = value.get("language", "PYTHON")
    if language not in ("PYTHON", "LANGUAGE_UNSPECIFIED"):
        raise bad_field(f"{at}.language", f"only PYTHON runs here, got {language!r}")
    code = value.get("code")
    if not isinstance(code, str):
        raise bad_field(f"{at}.code", "must be a string")
    return code


def result_of(value: dict[str, Any], at: str) -> ExecutionResult:
    outcome_name = value.get("outcome", "OUTCOME_UNSPECIFIED")
    if outcome_name not in OUTCOMES:
        raise bad_field(f"{at}.outcome", f"must be one of {', '.join(OUTCOMES)}, got {outcome_name!r}")
    output = value.get("output", "")
    if not isinstance(output, str):
        raise bad_field(f"{at}.output", "must be a string")
    outcome = OUTCOMES[outcome_name]
    if outcome is Outcome.OK:
        return ExecutionResult(outcome=outcome, stdout=output)
    return ExecutionResult(
        outcome=outcome,
        stderr=output,
        error_message=output.strip().splitlines()[-1] if output.strip() else "the code failed",
    )


# -- files ------------------------------------------------------------------------


def blob_bytes(blob: dict[str, Any], at: str) -> bytes:
    data = blob.get("data")
    if not isinstance(data, str):
        raise bad_field(f"{at}.data", "must be a base64 string")
    try:
        return base64.b64decode(data, altchars=b"-_" if ("-" in data or "_" in data) else None, validate=True)
    except (binascii.Error, ValueError):
        raise bad_field(f"{at}.data", "is not valid base64") from None


def mime_of(blob: dict[str, Any], at: str) -> str:
    mime = blob.get("mimeType")
    if not isinstance(mime, str) or "/" not in mime:
        raise bad_field(f"{at}.mimeType", f"must be a MIME type such as text/csv, got {mime!r}")
    return mime.split(";")[0].strip().lower()


def file_name(blob: dict[str, Any], caption: str | None, number: int, at: str) -> str:
    """The file's name in the code's working directory: its displayName, the
    caption before it, or ``input_N`` with the extension of its type."""
    mime = mime_of(blob, at)
    for name in (blob.get("displayName"), caption):
        if isinstance(name, str) and _SAFE_NAME.match(name) and ".." not in name:
            return name
    ext = _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin"
    return f"input_{number}{ext}"


def unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot else (name, "")
    n = 2
    while f"{stem}_{n}{ext}" in taken:
        n += 1
    return f"{stem}_{n}{ext}"


def figure_of(blob: dict[str, Any], at: str, index: int) -> Artifact:
    mime = mime_of(blob, at)
    ext = _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin"
    return Artifact.of(f"figure-{index + 1}{ext}", blob_bytes(blob, at), mime)


# -- the rest of the request ------------------------------------------------------


def parse_system(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("parts"), list):
        raise bad_field("systemInstruction", "must be a content object with parts")
    texts = []
    for j, part in enumerate(value["parts"]):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise bad_field(f"systemInstruction.parts[{j}].text", "must be a string (the instruction is text)")
        texts.append(part["text"])
    return "\n".join(texts)


def parse_tools(value: Any) -> bool:
    """Whether the request offers code execution (the only tool served here)."""
    if value is None:
        return False
    if not isinstance(value, list):
        raise bad_field("tools", "must be a list")
    found = False
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise bad_field(f"tools[{i}]", "must be an object")
        others = sorted(set(tool) - {"codeExecution"})
        if others:
            raise bad_field(f"tools[{i}].{others[0]}", "not supported: codeloop serve offers codeExecution only")
        found = found or "codeExecution" in tool
    return found


def parse_generation_config(value: Any) -> tuple[float | None, int | None]:
    """Temperature and maxOutputTokens (honoured); candidateCount must be 1;
    other sampling fields are accepted and left to the backend's defaults."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise bad_field("generationConfig", "must be an object")
    temperature = value.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2
    ):
        raise bad_field("generationConfig.temperature", f"must be a number within [0, 2], got {temperature!r}")
    max_tokens = value.get("maxOutputTokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise bad_field("generationConfig.maxOutputTokens", f"must be a positive integer, got {max_tokens!r}")
    count = value.get("candidateCount")
    if count not in (None, 1):
        raise bad_field("generationConfig.candidateCount", f"only 1 candidate is served, got {count!r}")
    return (float(temperature) if temperature is not None else None), max_tokens
