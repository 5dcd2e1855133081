"""Running one request on a backend: codeloop's loop when the request offers
``codeExecution``, a plain chat with the backend model otherwise.

Both yield :class:`Chunk` s as things happen (each model answer, each piece of
code, each result); the last chunk carries the finish reason and the usage.
A backend model failure raises :class:`ApiError` 502, a broken executor 500;
:func:`bounded` cuts a run that outlives its time with 504.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from .. import events as ev
from ..logs import get_logger
from ..loop import Orchestrator
from ..models.base import ModelError, StreamingModel
from ..prompts import Prompts
from ..types import Conversation, UserMessage
from .errors import ApiError, bad_field
from .sampling import Variant, with_sampling
from .settings import Backend
from .wire_in import GenerateRequest
from .wire_out import ResponseBuilder, finish_reason, text_part, usage_metadata

# Files a plain chat (no code execution) can hand the model: their text goes into the prompt.
TEXT_TYPES = ("text/", "application/json", "application/xml")


@dataclass
class Chunk:
    parts: list[dict[str, Any]] = field(default_factory=list)
    finish: str | None = None  # set on the last chunk only
    usage: dict[str, Any] | None = None


def loop_prompts(base: Prompts, system: str) -> Prompts:
    """The loop's own system text, then the client's systemInstruction."""
    if not system.strip():
        return base
    escaped = system.replace("{", "{{").replace("}", "}}")  # the template is str.format'ed
    return base.replace(system_template=f"{base.system_template}\n\nInstructions for this conversation:\n{escaped}")


async def sampled(backend: Backend, request: GenerateRequest) -> Variant:
    try:
        return await with_sampling(backend.model, request.temperature, request.max_tokens)
    except ModelError as exc:  # e.g. a local model whose server cannot start
        raise ApiError(502, f"the backend model {backend.alias!r} failed: {exc}") from None


async def run_loop(backend: Backend, request: GenerateRequest, *, run_id: str) -> AsyncGenerator[Chunk, None]:
    """The request through codeloop's loop, as Gemini's code execution."""
    variant = await sampled(backend, request)
    base = Orchestrator(variant.model, backend.executor, config=backend.loop).prompts
    config = backend.loop.replace(prompts=loop_prompts(base, request.system))
    orchestrator = Orchestrator(variant.model, backend.executor, config=config)
    conversation = Conversation(messages=list(request.history))
    builder = ResponseBuilder()
    try:
        async for event in orchestrator.stream(
            request.prompt, files=request.files, conversation=conversation, run_id=run_id
        ):
            parts = builder.feed(event)
            if parts:
                yield Chunk(parts)
            if isinstance(event, ev.Done):
                break
    finally:
        if getattr(backend.executor, "stateful", False):
            await backend.executor.reset(run_id)  # each request is its own session
        if variant.close is not None:
            await variant.close()
    if builder.model_failed:
        raise ApiError(502, f"the backend model {backend.alias!r} failed: {builder.error}")
    if builder.executor_failed:  # this server's own sandbox broke, not the client's code
        raise ApiError(500, f"the run on {backend.alias!r} stopped: {builder.error}")
    yield Chunk(finish=builder.finish(), usage=builder.usage())


def chat_prompt(request: GenerateRequest) -> str:
    """A plain chat's prompt: the user's text, then each text file's contents
    (no code runs, so the model reads them). Binary files need code execution."""
    pieces = [request.prompt] if request.prompt else []
    for f in request.files:
        try:
            text = f.data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_field(
                "contents",
                f"file {f.name!r} is not text: binary files (PNG, JPEG...) need "
                "the codeExecution tool, where the code reads them",
            ) from None
        pieces.append(f"File {f.name}:\n```\n{text}\n```")
    return "\n\n".join(pieces)


async def run_chat(backend: Backend, request: GenerateRequest, *, stream: bool) -> AsyncGenerator[Chunk, None]:
    """The request as a plain chat with the backend model: no tools, no code run."""
    prompt = chat_prompt(request)
    conversation = Conversation(system=request.system, messages=[*request.history, UserMessage(text=prompt)])
    variant = await sampled(backend, request)
    model = variant.model
    turn = None
    streamed = False
    try:
        if stream and isinstance(model, StreamingModel):
            async for piece in model.generate_stream(conversation, ()):
                if isinstance(piece, str):
                    streamed = True
                    yield Chunk([text_part(piece)])
                else:
                    turn = piece
        else:
            turn = await model.generate(conversation, ())
    except ModelError as exc:
        raise ApiError(502, f"the backend model {backend.alias!r} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if variant.close is not None:
            await variant.close()
    if turn is None:
        raise ApiError(502, f"the backend model {backend.alias!r} ended its stream without an answer")
    parts = [] if streamed or not turn.text else [text_part(turn.text)]
    usage = usage_metadata(
        turn.usage.input_tokens, turn.usage.tool_tokens, turn.usage.output_tokens, turn.usage.thoughts_tokens
    )
    yield Chunk(parts, finish=finish_reason(turn.finish_reason), usage=usage)


async def bounded(chunks: AsyncGenerator[Chunk, None], *, timeout_s: float, what: str) -> AsyncGenerator[Chunk, None]:
    """``chunks`` until ``timeout_s`` has passed since the first was asked
    for; then the run is cancelled (its execution stops) and 504 raised."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                get_logger().warning("serve.run_timeout", what=what, timeout_s=timeout_s)
                raise ApiError(504, f"{what} did not finish within the server's run time of {timeout_s:g} s") from None
            yield chunk
    finally:
        await chunks.aclose()
