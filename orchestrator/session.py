"""Chat sessions: each message runs the loop with the whole history.

    session = Session(model, executor)
    first = await session.send("Load data.csv and describe it", files=["data.csv"])
    second = await session.send("Now plot the second column")

With a stateful executor, variables persist across messages (the session id
names the executor's state). Files stay available to later messages.
:class:`SyncSession` is the same for code without an event loop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from executors.base import Executor, InputFile, as_input_files

from . import events as ev
from .images import InputFileTooLarge
from .loop import Orchestrator
from .models.base import Model
from .types import Conversation, RunResult, UserMessage

FORMAT = "codeloop.session/1"


class SessionFileError(ValueError):
    """A saved session that cannot be read back."""


class Session:
    """``config`` (a :class:`~orchestrator.config.LoopConfig`) and ``settings``
    (its fields by keyword, or ``stream_text``) go to :class:`Orchestrator`."""

    def __init__(self, model: Model, executor: Executor, *, session_id: str | None = None, **settings: Any) -> None:
        self.model = model
        self.executor = executor
        self.orchestrator = Orchestrator(model, executor, **settings)
        self.id = session_id or uuid.uuid4().hex[:12]
        self.conversation = Conversation()
        self.results: list[RunResult] = []
        self.files: dict[str, InputFile] = {}  # by name; a later file replaces an earlier one

    async def send(self, text: str, files: Sequence[str | Path | InputFile] = ()) -> RunResult:
        """Run one message through the loop, continuing the conversation."""
        result: RunResult | None = None
        async for event in self.stream(text, files):
            if isinstance(event, ev.Done):
                result = event.result
        assert result is not None  # the loop's stream always ends with Done
        return result

    async def stream(self, text: str, files: Sequence[str | Path | InputFile] = ()) -> AsyncIterator[ev.Event]:
        """:meth:`send`, yielding the loop's events as they happen."""
        before = dict(self.files)
        for f in as_input_files(files):
            self.files[f.name] = f
        start = len(self.conversation.messages)
        try:
            async for event in self.orchestrator.stream(
                text, files=list(self.files.values()), conversation=self.conversation, session=self.id
            ):
                if isinstance(event, ev.Done) and event.result is not None:
                    self.results.append(event.result)
                    self._keep_files_once(start)
                yield event
        except InputFileTooLarge:  # refused before any model call: the session stays as it was
            self.files = before
            raise

    def _keep_files_once(self, start: int) -> None:
        """Every run gets all the session's files, so each user message holds
        them all; keep only the new ones in the history (saved files stay small)."""
        seen = {
            (f.name, f.data) for m in self.conversation.messages[:start] if isinstance(m, UserMessage) for f in m.files
        }
        for message in self.conversation.messages[start:]:
            if isinstance(message, UserMessage):
                message.files = [f for f in message.files if (f.name, f.data) not in seen]
                seen.update((f.name, f.data) for f in message.files)

    async def reset(self) -> None:
        """Forget the conversation, the files and the executor's state."""
        self.conversation = Conversation()
        self.results = []
        self.files = {}
        await self.executor.reset(self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "model": getattr(self.model, "name", type(self.model).__name__),
            "conversation": self.conversation.to_json(),
            "results": [r.to_json() for r in self.results],
            "files": [f.to_json() for f in self.files.values()],
        }

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return target

    async def load(self, path: str | Path) -> None:
        """Continue a saved session. The executor's state (variables) is not
        saved, so it starts empty: the conversation shows what was computed."""
        data = read_session_file(path)
        await self.executor.reset(self.id)  # the state of the session being replaced
        self.id = data["id"]
        self.conversation = Conversation.from_json(data["conversation"])
        self.results = [RunResult.from_json(r) for r in data.get("results", [])]
        self.files = {f.name: f for f in (InputFile.from_json(x) for x in data.get("files", []))}
        await self.executor.reset(self.id)  # stale state left under the saved id


def read_session_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SessionFileError(f"cannot read session file {str(p)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SessionFileError(f"{p}: line {exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionFileError(f"{p}: not a codeloop session file (expected format {FORMAT!r})")
    for key in ("id", "conversation"):
        if key not in data:
            raise SessionFileError(f"{p}: missing field {key!r}")
    return data


class SyncSession:
    """A :class:`Session` for synchronous code. One event loop serves every
    call, so executors that keep state across calls (kernels) stay usable.
    Close it (or use ``with``) to close the executor."""

    def __init__(self, model: Model, executor: Executor, **settings: Any) -> None:
        self._runner = asyncio.Runner()
        self.session = Session(model, executor, **settings)

    def send(self, text: str, files: Sequence[str | Path | InputFile] = ()) -> RunResult:
        return self._runner.run(self.session.send(text, files))

    def reset(self) -> None:
        self._runner.run(self.session.reset())

    def save(self, path: str | Path) -> Path:
        return self.session.save(path)

    def load(self, path: str | Path) -> None:
        self._runner.run(self.session.load(path))

    @property
    def conversation(self) -> Conversation:
        return self.session.conversation

    def close(self) -> None:
        try:
            self._runner.run(self.session.executor.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
