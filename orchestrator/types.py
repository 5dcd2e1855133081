"""The orchestrator's data: plain dataclasses, each with a JSON round-trip."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from executors import jsondata
from executors.base import Artifact, ExecutionResult, InputFile


@dataclass
class Usage:
    """Token counts, in Gemini's terms. ``tool_tokens`` are the intermediate
    (tool-use prompt) tokens; ``requests`` counts model calls. Images sent
    are part of ``input_tokens`` as the provider reports them.
    ``cache_read_tokens`` and ``cache_write_tokens`` are the part of
    ``input_tokens`` read from or written to the provider's prompt cache
    (billed at other rates); they are not added to the total again."""

    input_tokens: int = 0
    output_tokens: int = 0
    tool_tokens: int = 0
    thoughts_tokens: int = 0
    requests: int = 0
    cost_usd: float | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost_usd is not None or other.cost_usd is not None:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            tool_tokens=self.tool_tokens + other.tool_tokens,
            thoughts_tokens=self.thoughts_tokens + other.thoughts_tokens,
            requests=self.requests + other.requests,
            cost_usd=cost,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.tool_tokens + self.thoughts_tokens

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return jsondata.from_json(cls, data)


CodeSource = Literal["fence", "tool_call", "text_tool_call", "server"]


@dataclass
class CodeBlock:
    code: str
    language: str = "python"
    source: CodeSource = "fence"
    call_id: str | None = None  # the tool call this block came from, if any

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeBlock:
        return jsondata.from_json(cls, data)


@dataclass
class Attempt:
    """One execution: the code that ran and what happened."""

    code: str
    result: ExecutionResult
    step: int = 0
    remote: bool = False  # executed by the model provider (Gemini's server-side tool)

    @property
    def ok(self) -> bool:
        return self.result.ok

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        return jsondata.from_json(cls, data, result=ExecutionResult.from_json)


@dataclass
class ModelTurn:
    """What a model said in one response.

    ``raw`` keeps the provider's own message (e.g. Gemini's ``Content`` with
    function calls and thought signatures) so later requests can send it back
    exactly. ``executed`` holds code the provider already ran server-side.
    """

    text: str = ""
    code_blocks: list[CodeBlock] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None
    raw: Any = None
    executed: list[Attempt] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**jsondata.to_json(self), "raw": self.raw}  # raw is the provider's JSON already

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelTurn:
        return jsondata.from_json(
            cls,
            data,
            code_blocks=jsondata.list_of(CodeBlock.from_json),
            usage=Usage.from_json,
            executed=jsondata.list_of(Attempt.from_json),
        )


MessageKind = Literal["user", "model", "execution"]


class _Tagged:
    """A message's JSON carries its ``kind``, which :func:`message_from_json` reads it back by."""

    kind: ClassVar[MessageKind]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **jsondata.to_json(self)}


@dataclass
class UserMessage(_Tagged):
    """What the model is told as the user: the task, a follow-up, or the
    loop's own request (for code, a summary...). ``files`` are the input files
    sent with it; ``images`` the input images the model sees (for models that
    take images)."""

    text: str = ""
    files: list[InputFile] = field(default_factory=list)
    images: list[Artifact] = field(default_factory=list)
    kind: ClassVar[Literal["user"]] = "user"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserMessage:
        return jsondata.from_json(
            cls, data, files=jsondata.list_of(InputFile.from_json), images=jsondata.list_of(Artifact.from_json)
        )


@dataclass
class ModelMessage(_Tagged):
    """A model's reply, as the provider returned it."""

    turn: ModelTurn
    kind: ClassVar[Literal["model"]] = "model"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMessage:
        return jsondata.from_json(cls, data, turn=ModelTurn.from_json)


@dataclass
class ExecutionMessage(_Tagged):
    """The result of running the code of the model turn before it. It answers
    that turn's tool calls, or, after fenced code, is feedback in a user turn.
    ``feedback`` is what the model reads about the result (output, error,
    retries left); ``images`` are the figures the code drew that the model
    sees."""

    result: ExecutionResult
    feedback: str = ""
    images: list[Artifact] = field(default_factory=list)
    kind: ClassVar[Literal["execution"]] = "execution"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionMessage:
        return jsondata.from_json(
            cls, data, result=ExecutionResult.from_json, images=jsondata.list_of(Artifact.from_json)
        )


Message: TypeAlias = UserMessage | ModelMessage | ExecutionMessage
"""One entry of a conversation; ``match`` on the type (or its ``kind``)."""

_MESSAGE_TYPES: dict[str, type[UserMessage] | type[ModelMessage] | type[ExecutionMessage]] = {
    t.kind: t for t in (UserMessage, ModelMessage, ExecutionMessage)
}


def message_from_json(data: Any) -> Message:
    """A message from its JSON, tagged by ``kind``. Messages saved before the
    tag (one shape with a ``role`` and optional payloads) are read too."""
    if isinstance(data, dict) and "kind" not in data and "role" in data:
        data = _untagged_message(data)
    if not isinstance(data, dict):
        raise jsondata.JSONDataError(f"Message: expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in _MESSAGE_TYPES:
        raise jsondata.JSONDataError(f"Message.kind: expected one of {', '.join(_MESSAGE_TYPES)}, got {kind!r}")
    return _MESSAGE_TYPES[kind].from_json(data)


def _untagged_message(data: dict[str, Any]) -> dict[str, Any]:
    """The tagged JSON of a message saved as ``{"role", "text", "turn",
    "result", "code_blocks", "files", "images"}``: a model message's text
    was its turn's, an execution's text its feedback."""
    role, text = data["role"], data.get("text") or ""
    if role == "model":
        return {"kind": "model", "turn": data.get("turn") or {"text": text}}
    if role == "execution":
        kept = {k: data[k] for k in ("result", "images") if data.get(k) is not None}
        return {"kind": "execution", "feedback": text, **kept}
    if role == "user":
        return {**data, "kind": "user"}
    raise jsondata.JSONDataError(f"Message.role: expected one of {', '.join(_MESSAGE_TYPES)}, got {role!r}")


@dataclass
class Conversation:
    """The system instruction and the messages so far. Models translate it
    into their own wire format; nothing provider-specific lives here except
    each model turn's ``raw``."""

    system: str = ""
    messages: list[Message] = field(default_factory=list)

    def add(self, message: Message) -> Message:
        self.messages.append(message)
        return message

    @property
    def first_prompt(self) -> str:
        return next((m.text for m in self.messages if isinstance(m, UserMessage)), "")

    @property
    def last_prompt(self) -> str:
        return next((m.text for m in reversed(self.messages) if isinstance(m, UserMessage)), "")

    def count(self, kind: MessageKind) -> int:
        return sum(1 for m in self.messages if m.kind == kind)

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        return jsondata.from_json(cls, data, messages=jsondata.list_of(message_from_json))


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model. codeloop offers one: ``run_python(code)``."""

    name: str
    description: str
    parameters: dict[str, Any]


RUN_PYTHON = ToolSpec(
    name="run_python",
    description=(
        "Run a Python 3 program in a fresh sandboxed process and return its stdout, stderr, "
        "error and any files or figures it produced. Print every result you need."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The complete Python program to run."}},
        "required": ["code"],
    },
)


class RunStatus(str, enum.Enum):
    SOLVED = "solved"  # the last execution succeeded
    FAILED = "failed"  # the last execution failed, or the model could not be reached
    ANSWERED_WITHOUT_CODE = "answered_without_code"  # no code was needed, none ran
    UNVERIFIED = "unverified"  # the task needed code, but the model answered without running any


@dataclass
class RunResult:
    prompt: str
    summary: str
    status: RunStatus
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    wall_time_s: float = 0.0
    model_time_s: float = 0.0
    execution_time_s: float = 0.0
    run_id: str = ""
    model: str = ""
    executor: str = ""
    error: str | None = None  # why the run ended early (a model error), if it did
    repeats_rejected: int = 0  # programs identical to a failed one, not run again
    code_requested: bool = False  # the model answered without code and was asked for it
    peak_request_tokens: int = 0  # the largest request sent, estimated after fitting the context

    @property
    def artifacts(self) -> list[Artifact]:
        return [a for attempt in self.attempts for a in attempt.result.artifacts]

    @property
    def code(self) -> str:
        """The last code that ran (the answer's program)."""
        return self.attempts[-1].code if self.attempts else ""

    @property
    def retries(self) -> int:
        """Retries spent: failed executions before the last one, plus programs
        rejected as repeats of a failed one. 0 when the first code worked."""
        failed_before_last = sum(1 for a in self.attempts[:-1] if not a.ok) if self.attempts else 0
        return failed_before_last + self.repeats_rejected

    @property
    def failed_executions(self) -> int:
        return sum(1 for a in self.attempts if not a.ok)

    @property
    def ok(self) -> bool:
        """Solved, or answered a question that needed no code."""
        return self.status in (RunStatus.SOLVED, RunStatus.ANSWERED_WITHOUT_CODE)

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        # Results stored before the summary was kept had none.
        return jsondata.from_json(
            cls,
            {"summary": "", **data},
            status=RunStatus,
            attempts=jsondata.list_of(Attempt.from_json),
            usage=Usage.from_json,
        )
