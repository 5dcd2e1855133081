"""A fake Anthropic Messages API server (a test double) for the real ``anthropic`` SDK.

Serves ``POST /v1/messages`` (plain and ``stream: true`` as server-sent
events), answers from a script, injects faults (429, 529 overloaded, ...) and
records every request. Point the SDK at it with::

    with FakeAnthropicServer([text_message("hello")]) as fake:
        client = anthropic.AsyncAnthropic(api_key="fake-key", base_url=fake.url)

or run ``python -m orchestrator.testing.fake_anthropic --script replies.json``
and give codeloop ``ANTHROPIC_BASE_URL=<printed url>``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .fake_http import FakeModelServer, Fault, RecordedRequest, serve_command_line

# The fault types (Fault, Malformed, Disconnect, Delay, Stream) live in fake_http.
__all__ = ["FakeAnthropicServer", "events_of", "message", "overloaded", "text_message", "tool_use_message", "usage"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropicServer(FakeModelServer):
    provider = "anthropic"
    api = "Anthropic Messages"
    replies = "message bodies"

    def banner(self) -> str:
        return f"fake Anthropic API at {self.url}  (set ANTHROPIC_BASE_URL={self.url})"

    def serves(self, path: str) -> bool:
        return path == "/v1/messages"

    def wrong_key_fault(self) -> Fault:
        return Fault(401, "invalid x-api-key")

    def body_error(self, request: RecordedRequest) -> Fault | None:
        body = request.body if isinstance(request.body, dict) else {}
        if not body.get("max_tokens"):
            return Fault(400, "max_tokens: Field required")
        return None

    def is_stream(self, request: RecordedRequest) -> bool:
        return isinstance(request.body, dict) and bool(request.body.get("stream"))

    def api_key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None:
        return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ") or None

    def error_body(self, fault: Fault) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(fault.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": fault.message or kind.replace("_", " ")}}

    def stream_chunks(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        return events_of(reply)

    def sse_event(self, chunk: dict[str, Any]) -> bytes:
        return f"event: {chunk['type']}\ndata: {json.dumps(chunk)}\n\n".encode()

    # -- what the tests read back -----------------------------------------

    def messages(self, index: int = -1) -> list[dict[str, Any]]:
        """The ``messages`` of a recorded request (the last one by default)."""
        return self.requests[index].body["messages"]


# -- building replies -------------------------------------------------------


def usage(
    input_tokens: int = 10, output_tokens: int = 5, *, cache_creation: int | None = None, cache_read: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_creation is not None:
        data["cache_creation_input_tokens"] = cache_creation
    if cache_read is not None:
        data["cache_read_input_tokens"] = cache_read
    return data


def message(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "end_turn",
    usage_data: dict[str, Any] | None = None,
    model: str = "claude-fake",
) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_data if usage_data is not None else usage(),
    }


def text_message(text: str, **kwargs: Any) -> dict[str, Any]:
    return message([{"type": "text", "text": text}], **kwargs)


def tool_use_message(
    code: str, *, call_id: str = "toolu_1", text: str = "", name: str = "run_python", **kwargs: Any
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": call_id, "name": name, "input": {"code": code}})
    return message(content, stop_reason="tool_use", **kwargs)


def overloaded() -> Fault:
    return Fault(529, "Overloaded")


def events_of(body: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """A message as the stream events the real API sends: text in pieces,
    tool input as two JSON halves, output tokens in the closing delta."""
    start = {**body, "content": [], "stop_reason": None, "usage": {**body.get("usage", {}), "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(body.get("content", [])):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            text = block["text"]
            size = max(1, -(-len(text) // pieces))
            events += [
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": text[i : i + size]},
                }
                for i in range(0, len(text), size)
            ]
        elif block["type"] == "tool_use":
            events.append({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
            args = json.dumps(block["input"])
            half = len(args) // 2
            events += [
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                }
                for part in (args[:half], args[half:])
            ]
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": body.get("stop_reason"), "stop_sequence": None},
            "usage": {"output_tokens": body.get("usage", {}).get("output_tokens", 0)},
        }
    )
    events.append({"type": "message_stop"})
    return events


def main(argv: list[str] | None = None) -> int:
    return serve_command_line(FakeAnthropicServer, argv)


if __name__ == "__main__":
    sys.exit(main())
