"""The state of one run in flight: what the loop has said and spent so far.
The orchestrator keeps none of it, so one orchestrator serves concurrent runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from executors.base import InputFile

from .policy import Progress
from .types import Conversation, RunStatus, Usage


@dataclass
class RunState:
    """One run in flight: its conversation, the policy's view of its progress,
    and what it has spent. The orchestrator itself holds none of it."""

    run_id: str
    prompt: str
    conv: Conversation
    inputs: list[InputFile]
    session: str
    logger: Any
    progress: Progress
    fenced: bool  # code comes as fenced blocks (or calls written as text), not tool calls
    started: float = field(default_factory=time.perf_counter)
    usage: Usage = field(default_factory=Usage)
    model_time: float = 0.0
    execution_time: float = 0.0
    peak_request_tokens: int = 0
    last_elapsed: float = 0.0  # of the latest model request
    summary: str = ""
    error: str | None = None
    done: bool = False

    def status(self) -> RunStatus:
        attempts = self.progress.attempts
        if self.error is not None:
            return RunStatus.FAILED
        if not attempts:
            return RunStatus.UNVERIFIED if self.progress.needs_code else RunStatus.ANSWERED_WITHOUT_CODE
        return RunStatus.SOLVED if attempts[-1].ok else RunStatus.FAILED
