"""Record any model's turns to a cassette, and replay them without the model.

A cassette is JSONL, one line per model turn::

    {"prompt": "<first user prompt>", "index": 0, "turn": {...ModelTurn JSON...}}

``index`` counts the model turns before this one in that conversation. Replay
gives back model text only: the code in it is executed live every time, so the
outputs a user sees are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from ..types import Conversation, ModelTurn, ToolSpec
from .base import Model, ModelError, model_trait


def _key(conversation: Conversation) -> tuple[str, int]:
    return conversation.first_prompt, conversation.count("model")


def load_cassette(path: str | Path, meta: dict | None = None) -> dict[tuple[str, int], ModelTurn]:
    """The cassette's turns by (first prompt, turn index). ``meta`` (if given)
    receives the recorded model's name and context length."""
    turns: dict[tuple[str, int], ModelTurn] = {}
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FileNotFoundError(f"cassette {p} cannot be read: {exc.strerror}") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            turns[(record["prompt"], int(record["index"]))] = ModelTurn.from_json(record["turn"])
            if meta is not None:
                meta.setdefault("model", record.get("model"))
                meta.setdefault("context_length", record.get("context_length"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{p}:{lineno}: not a cassette record ({exc})") from exc
    return turns


class ReplayModel:
    """Plays back recorded turns, keyed by the first prompt and turn index."""

    def __init__(self, path: str | Path, *, name: str | None = None) -> None:
        self.path = Path(path)
        meta: dict = {}
        self.turns = load_cassette(self.path, meta)
        self.name = name or f"replay:{self.path.name}"
        # The loop talks to a replay as it talked to the recorded model: same
        # prompt profile and tool mode, same context budget.
        self.profile_name = meta.get("model")
        self.context_length = meta.get("context_length")
        self.calls = 0

    @property
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(prompt for prompt, _ in self.turns))

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        self.calls += 1
        prompt, index = _key(conversation)
        try:
            turn = self.turns[(prompt, index)]
        except KeyError:
            raise ModelError(f"cassette {self.path} has no turn {index} for the prompt {prompt[:80]!r}") from None
        return ModelTurn.from_json(turn.to_json())


class RecordingModel:
    """Wraps a model and appends each turn it gives to a cassette."""

    def __init__(self, model: Model, path: str | Path) -> None:
        self.model = model
        self.wrapped = model  # the loop reads the model's traits through it
        self.path = Path(path)
        self.name = getattr(model, "name", type(model).__name__)
        self._lock = asyncio.Lock()

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        prompt, index = _key(conversation)
        turn = await self.model.generate(conversation, tools)
        record = {"prompt": prompt, "index": index, "turn": turn.to_json(), "model": self.name}
        context_length = model_trait(self.model, "context_length")
        if context_length:
            record["context_length"] = context_length
        async with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        return turn

    async def aclose(self) -> None:
        """Close the wrapped model, which may hold a client or a local server."""
        aclose = getattr(self.model, "aclose", None)
        if aclose is not None:
            await aclose()
