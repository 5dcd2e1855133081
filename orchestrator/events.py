"""Typed events from :meth:`Orchestrator.stream`, for progress bars and streaming UIs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from executors.base import ExecutionResult

from .types import Attempt, CodeBlock, ModelTurn, RunResult


@dataclass
class Event:
    """Base of the events; each one's ``type`` is its class name in snake case (``TextDelta``: ``text_delta``)."""

    type: ClassVar[str] = "event"
    run_id: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for key, value in self.__dict__.items():
            data[key] = value.to_json() if hasattr(value, "to_json") else value
        return data


@dataclass
class ModelRequest(Event):
    step: int = 0
    tools: bool = True  # False when the loop asks for the final summary


@dataclass
class TextDelta(Event):
    text: str = ""


@dataclass
class ModelResponse(Event):
    turn: ModelTurn = field(default_factory=ModelTurn)
    duration_s: float = 0.0


@dataclass
class CodeExtracted(Event):
    step: int = 0
    code: str = ""
    blocks: list[CodeBlock] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "run_id": self.run_id,
            "step": self.step,
            "code": self.code,
            "blocks": [b.to_json() for b in self.blocks],
        }


@dataclass
class ExecutionStarted(Event):
    step: int = 0
    code: str = ""


@dataclass
class ExecutionFinished(Event):
    step: int = 0
    attempt: Attempt | None = None

    @property
    def result(self) -> ExecutionResult | None:
        return self.attempt.result if self.attempt else None


@dataclass
class Retry(Event):
    failures: int = 0
    retries_left: int = 0
    reason: str = ""


@dataclass
class Summary(Event):
    text: str = ""


@dataclass
class Done(Event):
    result: RunResult | None = None
