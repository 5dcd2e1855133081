"""``ScriptedModel``: a test double that answers from a script, never a network.

Like pydantic-ai's ``FunctionModel``: give it a list of turns (played in
order within each conversation) or a function of the conversation.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..types import Conversation, ExecutionMessage, Message, ModelMessage, ModelTurn, ToolSpec, Usage, UserMessage
from .base import ModelError

ScriptItem = str | ModelTurn
ScriptFunction = Callable[[Conversation, Sequence[ToolSpec]], ScriptItem | Awaitable[ScriptItem]]


def estimate_usage(conversation: Conversation, text: str) -> Usage:
    """Rough token counts (4 characters a token) so reports have numbers to show."""
    chars = len(conversation.system) + sum(len(_text(m)) for m in conversation.messages)
    return Usage(input_tokens=chars // 4, output_tokens=max(1, len(text) // 4), requests=1)


def _text(message: Message) -> str:
    match message:
        case ModelMessage(turn=turn):
            return turn.text
        case UserMessage(text=text) | ExecutionMessage(feedback=text):
            return text


class ScriptedModel:
    """Answers each request from ``script``.

    A list is indexed by the number of model turns already in the
    conversation, so each conversation (each prompt of a batch) replays the
    same script independently and concurrent runs never interfere. A function
    receives the conversation and the tools offered and returns a string or a
    :class:`ModelTurn` (it may be async). ``latency_s`` simulates a slow model.
    """

    def __init__(
        self,
        script: Sequence[ScriptItem] | ScriptFunction,
        *,
        name: str = "scripted",
        latency_s: float = 0.0,
    ) -> None:
        self.script = script
        self.name = name
        self.latency_s = latency_s
        self.calls = 0

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> ScriptedModel:
        """A JSON list of turns: strings or ModelTurn JSON objects."""
        try:
            items = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read script {path}: {exc}") from exc
        if not isinstance(items, list):
            raise ValueError(f"script {path} must hold a JSON list of turns")
        turns = [item if isinstance(item, str) else ModelTurn.from_json(item) for item in items]
        return cls(turns, name=kwargs.pop("name", f"scripted:{Path(path).name}"), **kwargs)

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if callable(self.script):
            item = self.script(conversation, tools)
            if inspect.isawaitable(item):
                item = await item
        else:
            index = conversation.count("model")
            if index >= len(self.script):
                raise ModelError(f"scripted model has no turn {index} (the script has {len(self.script)})")
            item = self.script[index]
        if not isinstance(item, ModelTurn):
            return ModelTurn(
                text=str(item), usage=estimate_usage(conversation, str(item)), finish_reason="STOP", model=self.name
            )
        # The loop never changes a turn, so the script's own turn is returned as it is; what the
        # script left out (usage, the model's name) is filled in on a new turn, not on the script's.
        if item.usage.requests == 0 or not item.model:
            usage = estimate_usage(conversation, item.text) if item.usage.requests == 0 else item.usage
            return replace(item, usage=usage, model=item.model or self.name)
        return item
