"""The provider-neutral walk over a conversation.

Every provider sends the same story in its own wire format: a model turn may
call ``run_python``; the next execution message answers those calls (or, after
fenced code, is plain feedback); calls the loop never answered are answered
"not run" before anything else, since the APIs reject a history with open
calls; a chat resends its input files with each message, but each file goes
to the model once. :func:`walk` tells that story to a :class:`Writer`, which
only builds its provider's messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from executors.base import InputFile

from ..types import RUN_PYTHON, CodeBlock, Conversation, ExecutionMessage, ModelMessage, UserMessage
from .base import OTHER_CALL_NOTE

NOT_RUN = "This call was not run."

Call = TypeVar("Call")


class Writer(Protocol[Call]):
    def model_turn(self, message: ModelMessage) -> Sequence[Call]:
        """Add a model turn; return its tool calls, which now await answers."""

    def answer_calls(self, calls: Sequence[Call], execution: ExecutionMessage | None) -> None:
        """Answer a turn's calls with the execution that ran them (None: they were not run)."""

    def execution_text(self, execution: ExecutionMessage) -> None:
        """Add feedback on code that came as text (no calls to answer)."""

    def user(self, message: UserMessage, new_files: list[InputFile]) -> None:
        """Add a user message; ``new_files`` are its files not sent before."""


def walk(conversation: Conversation, writer: Writer[Any]) -> None:
    pending: Sequence[Any] = []
    sent_files: set[tuple[str, bytes]] = set()
    for index, message in enumerate(conversation.messages):
        match message:
            case ModelMessage():
                if pending:
                    writer.answer_calls(pending, None)
                pending = writer.model_turn(message)
            case ExecutionMessage() if pending:
                writer.answer_calls(pending, message)
                pending = []
            case ExecutionMessage():
                writer.execution_text(message)
            case UserMessage():
                if pending:
                    writer.answer_calls(pending, None)
                    pending = []
                new_files = [f for f in message.files if (f.name, f.data) not in sent_files]
                sent_files.update((f.name, f.data) for f in message.files)
                writer.user(message, new_files)
            case _:
                raise ValueError(f"conversation message {index} is a {type(message).__name__}, not a message")


# -- pieces every writer needs ------------------------------------------------


def own_raw(message: ModelMessage, provider: str) -> dict[str, Any] | None:
    """The turn's raw message when this provider wrote it (sent back exactly)."""
    raw = message.turn.raw
    return raw if isinstance(raw, dict) and raw.get("provider") == provider else None


def tool_calls_of(message: ModelMessage) -> list[CodeBlock]:
    """The ``run_python`` calls of a turn another provider wrote (or one
    replayed without raw), to rebuild them in this provider's format."""
    return [b for b in message.turn.code_blocks if b.source == "tool_call"]


def answer_text(index: int, execution: ExecutionMessage | None) -> str:
    """What the ``index``-th call of a turn gets back. The loop runs a turn's
    calls as one program, so the first carries the output and the others
    point to it."""
    if execution is None:
        return NOT_RUN
    return execution.feedback if index == 0 else OTHER_CALL_NOTE


def is_run_python(name: str) -> bool:
    return name == RUN_PYTHON.name


def files_note(files: Sequence[InputFile]) -> str:
    """The input files as the model is told about them (the executor has them)."""
    listing = ", ".join(f"{f.name} ({len(f.data)} bytes)" for f in files)
    return f"Input files in the working directory: {listing}."
