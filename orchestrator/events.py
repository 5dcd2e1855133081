"""Typed events from :meth:`Orchestrator.stream`, for progress bars and streaming UIs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from executors.base import ExecutionResult

from .types import Attempt, CodeBlock, ModelTurn, RunResult


@dataclass
class Event:
    type: ClassVar[str] = "event"
    run_id: str

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for key, value in self.__dict__.items():
            data[key] = value.to_json() if hasattr(value, "to_json") else value
        return data


@dataclass
class ModelRequest(Event):
    type: ClassVar[str] = "model_request"
    step: int = 0
    tools: bool = True  # False when the loop asks for the final summary


@dataclass
class TextDelta(Event):
    type: ClassVar[str] = "text_delta"
    text: str = ""


@dataclass
class ModelResponse(Event):
    type: ClassVar[str] = "model_response"
    turn: ModelTurn = field(default_factory=ModelTurn)
    duration_s: float = 0.0


@dataclass
class CodeExtracted(Event):
    type: ClassVar[str] = "code_extracted"
    step: int = 0
    code: str = ""
    blocks: list[CodeBlock] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "run_id": self.run_id, "step": self.step, "code": self.code,
                "blocks": [b.to_json() for b in self.blocks]}


@dataclass
class ExecutionStarted(Event):
    type: ClassVar[str] = "execution_started"
    step: int = 0
    code: str = ""


@dataclass
class ExecutionFinished(Event):
    type: ClassVar[str] = "execution_finished"
    step: int = 0
    attempt: Attempt | None = None

    @property
    def result(self) -> ExecutionResult | None:
        return self.attempt.result if self.attempt else None


@dataclass
class Retry(Event):
    type: ClassVar[str] = "retry"
    failures: int = 0
    retries_left: int = 0
    reason: str = ""


@dataclass
class Summary(Event):
    type: ClassVar[str] = "summary"
    text: str = ""


@dataclass
class Done(Event):
    type: ClassVar[str] = "done"
    result: RunResult | None = None
