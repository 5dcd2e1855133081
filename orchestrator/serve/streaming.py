"""Chunks as HTTP bodies: one JSON answer, server-sent events (``alt=sse``,
what the google-genai SDK asks for), or a JSON array (the API's default stream).

An error after the first chunk has gone out cannot change the status any
more; it is sent as a last event holding Gemini's error object, which the
SDK raises as an ``APIError``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..logs import get_logger
from .errors import ApiError
from .runs import Chunk
from .wire_out import response_body


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


async def collect(chunks: AsyncGenerator[Chunk, None], *, model: str, response_id: str) -> dict[str, Any]:
    """The whole answer: every chunk's parts, the last chunk's finish and usage."""
    parts: list[dict[str, Any]] = []
    finish, usage = "STOP", None
    async for chunk in chunks:
        parts += chunk.parts
        finish = chunk.finish or finish
        usage = chunk.usage or usage
    return response_body(parts, model=model, response_id=response_id, finish=finish, usage=usage)


async def encoded(
    first: Chunk, rest: AsyncGenerator[Chunk, None], *, model: str, response_id: str, sse: bool
) -> AsyncGenerator[str, None]:
    """Each chunk as a response body, framed for SSE or as JSON array items."""

    def frame(body: dict[str, Any], index: int) -> str:
        if sse:
            return f"data: {dumps(body)}\r\n\r\n"
        return ("[" if index == 0 else ",\r\n") + dumps(body)

    index = 0
    try:
        yield frame(
            response_body(first.parts, model=model, response_id=response_id, finish=first.finish, usage=first.usage),
            index,
        )
        async for chunk in rest:
            index += 1
            yield frame(
                response_body(
                    chunk.parts, model=model, response_id=response_id, finish=chunk.finish, usage=chunk.usage
                ),
                index,
            )
    except ApiError as exc:
        index += 1
        yield frame(exc.body(), index)
    except Exception as exc:  # a bug must end this stream, not the server
        get_logger().exception("serve.stream_error", error=f"{type(exc).__name__}: {exc}")
        index += 1
        yield frame(ApiError(500, f"internal error: {type(exc).__name__}").body(), index)
    finally:
        await rest.aclose()  # a client that left stops the run
    if not sse:
        yield "]"


class StreamedAnswer(StreamingResponse):
    """A streaming response that gives its run slot back however it ends
    (finished, failed, or the client went away before the first byte)."""

    def __init__(self, content: AsyncGenerator[str, None], *, release: Callable[[], None], sse: bool) -> None:
        media_type = "text/event-stream" if sse else "application/json"
        super().__init__(content, media_type=media_type, headers={"Cache-Control": "no-cache"})
        self._release = release
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._content.aclose()  # stops the run if the client left mid-way
            finally:
                self._release()
