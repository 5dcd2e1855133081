"""The orchestrator's data: plain dataclasses, each with a JSON round-trip."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, Literal

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

    def __add__(self, other: "Usage") -> "Usage":
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
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Usage":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


CodeSource = Literal["fence", "tool_call", "text_tool_call", "server"]


@dataclass
class CodeBlock:
    code: str
    language: str = "python"
    source: CodeSource = "fence"
    call_id: str | None = None  # the tool call this block came from, if any

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "language": self.language, "source": self.source, "call_id": self.call_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CodeBlock":
        return cls(
            code=data["code"],
            language=data.get("language", "python"),
            source=data.get("source", "fence"),
            call_id=data.get("call_id"),
        )


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
        return {"code": self.code, "result": self.result.to_json(), "step": self.step, "remote": self.remote}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Attempt":
        return cls(
            code=data["code"],
            result=ExecutionResult.from_json(data["result"]),
            step=data.get("step", 0),
            remote=data.get("remote", False),
        )


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
        return {
            "text": self.text,
            "code_blocks": [b.to_json() for b in self.code_blocks],
            "usage": self.usage.to_json(),
            "finish_reason": self.finish_reason,
            "model": self.model,
            "raw": self.raw,
            "executed": [a.to_json() for a in self.executed],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelTurn":
        return cls(
            text=data.get("text", ""),
            code_blocks=[CodeBlock.from_json(b) for b in data.get("code_blocks", [])],
            usage=Usage.from_json(data.get("usage", {})),
            finish_reason=data.get("finish_reason"),
            model=data.get("model"),
            raw=data.get("raw"),
            executed=[Attempt.from_json(a) for a in data.get("executed", [])],
        )


Role = Literal["user", "model", "execution"]


@dataclass
class Message:
    """One entry of a conversation.

    ``user``: text (and input files on the first message). ``model``: a
    :class:`ModelTurn`. ``execution``: the result of running the code in the
    previous model turn, with ``text`` the feedback a text-only model reads.
    ``images``: pictures the model sees with the message (input images, the
    figures an execution drew), for models that take images.
    """

    role: Role
    text: str = ""
    turn: ModelTurn | None = None
    result: ExecutionResult | None = None
    code_blocks: list[CodeBlock] = field(default_factory=list)
    files: list[InputFile] = field(default_factory=list)
    images: list[Artifact] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "text": self.text,
            "turn": self.turn.to_json() if self.turn else None,
            "result": self.result.to_json() if self.result else None,
            "code_blocks": [b.to_json() for b in self.code_blocks],
            "files": [f.to_json() for f in self.files],
            "images": [i.to_json() for i in self.images],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Message":
        return cls(
            role=data["role"],
            text=data.get("text", ""),
            turn=ModelTurn.from_json(data["turn"]) if data.get("turn") else None,
            result=ExecutionResult.from_json(data["result"]) if data.get("result") else None,
            code_blocks=[CodeBlock.from_json(b) for b in data.get("code_blocks", [])],
            files=[InputFile.from_json(f) for f in data.get("files", [])],
            images=[Artifact.from_json(i) for i in data.get("images", [])],
        )


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
        return next((m.text for m in self.messages if m.role == "user"), "")

    @property
    def last_prompt(self) -> str:
        return next((m.text for m in reversed(self.messages) if m.role == "user"), "")

    def count(self, role: Role) -> int:
        return sum(1 for m in self.messages if m.role == role)

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, "messages": [m.to_json() for m in self.messages]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Conversation":
        return cls(system=data.get("system", ""), messages=[Message.from_json(m) for m in data.get("messages", [])])


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
        return {
            "run_id": self.run_id,
            "prompt": self.prompt,
            "summary": self.summary,
            "status": self.status.value,
            "attempts": [a.to_json() for a in self.attempts],
            "usage": self.usage.to_json(),
            "wall_time_s": self.wall_time_s,
            "model_time_s": self.model_time_s,
            "execution_time_s": self.execution_time_s,
            "model": self.model,
            "executor": self.executor,
            "error": self.error,
            "repeats_rejected": self.repeats_rejected,
            "code_requested": self.code_requested,
            "peak_request_tokens": self.peak_request_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        return cls(
            prompt=data["prompt"],
            summary=data.get("summary", ""),
            status=RunStatus(data["status"]),
            attempts=[Attempt.from_json(a) for a in data.get("attempts", [])],
            usage=Usage.from_json(data.get("usage", {})),
            wall_time_s=data.get("wall_time_s", 0.0),
            model_time_s=data.get("model_time_s", 0.0),
            execution_time_s=data.get("execution_time_s", 0.0),
            run_id=data.get("run_id", ""),
            model=data.get("model", ""),
            executor=data.get("executor", ""),
            error=data.get("error"),
            repeats_rejected=data.get("repeats_rejected", 0),
            code_requested=data.get("code_requested", False),
            peak_request_tokens=data.get("peak_request_tokens", 0),
        )
