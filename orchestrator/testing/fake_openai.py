"""A fake OpenAI-compatible chat-completions server (a test double).

Serves ``POST /v1/chat/completions`` (plain and ``stream: true``) for the real
``openai`` SDK: ``AsyncOpenAI(base_url=fake.url + "/v1", api_key="x")``.
Like the local servers it stands in for (Ollama, vLLM, llama.cpp), it can
be told to reject tools (``tools_supported=False``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .fake_http import (
    FakeModelServer,
    Fault,
    RecordedRequest,
    Script,
    serve_command_line,
)

# The fault types (Fault, Malformed, Disconnect, Delay, Stream) live in fake_http.
__all__ = [
    "FakeOpenAIServer",
    "chunks_of",
    "completion",
    "text_completion",
    "tool_call_completion",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class FakeOpenAIServer(FakeModelServer):
    provider = "openai"
    api = "OpenAI-compatible"
    replies = "completion bodies"

    def __init__(
        self,
        script: Script = (),
        *,
        tools_supported: bool = True,
        expected_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(script, expected_key=expected_key, host=host, port=port)
        self.tools_supported = tools_supported

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url``."""
        return f"{self.url}/v1"

    def banner(self) -> str:
        return f"fake OpenAI-compatible API at {self.base_url}  (use --model openai:MODEL@{self.base_url})"

    def serves(self, path: str) -> bool:
        return path == "/v1/chat/completions"

    def wrong_key_fault(self) -> Fault:
        return Fault(401, "Incorrect API key provided")

    def body_error(self, request: RecordedRequest) -> Fault | None:
        body = request.body if isinstance(request.body, dict) else {}
        if body.get("tools") and not self.tools_supported:
            # What Ollama says for a model without tool support.
            return Fault(400, f"registry.ollama.ai/library/{body.get('model')} does not support tools")
        return None

    def is_stream(self, request: RecordedRequest) -> bool:
        return isinstance(request.body, dict) and bool(request.body.get("stream"))

    def api_key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ") or None

    def error_body(self, fault: Fault) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(fault.status, "server_error")
        return {"error": {"message": fault.message or kind.replace("_", " "), "type": kind, "code": None}}

    def stream_chunks(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        return chunks_of(reply)

    def sse_end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def sse_event(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def messages(self, index: int = -1) -> list[dict[str, Any]]:
        return self.requests[index].body["messages"]


def completion(
    message: dict[str, Any],
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    reasoning_tokens: int | None = None,
    model: str = "fake-model",
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        "usage": usage,
    }


def text_completion(text: str, **kwargs: Any) -> dict[str, Any]:
    return completion({"content": text}, **kwargs)


def tool_call_completion(
    code: str, *, call_id: str = "call_1", text: str | None = None, name: str = "run_python", **kwargs: Any
) -> dict[str, Any]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps({"code": code})}}
    return completion({"content": text, "tool_calls": [call]}, finish_reason="tool_calls", **kwargs)


def chunks_of(body: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """A completion as stream chunks: text in pieces, each tool call's
    arguments in two halves, usage in a last chunk with no choices."""
    choice = body["choices"][0]
    message = choice["message"]
    base = {
        "id": body.get("id", "chatcmpl-fake"),
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model", "fake-model"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    text = message.get("content") or ""
    if text:
        size = max(1, -(-len(text) // pieces))
        out += [chunk({"content": text[i : i + size]}) for i in range(0, len(text), size)]
    for index, call in enumerate(message.get("tool_calls") or []):
        args = call["function"]["arguments"]
        half = len(args) // 2
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": args[:half]},
                        }
                    ]
                }
            )
        )
        out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]}))
    out.append(chunk({}, choice.get("finish_reason", "stop")))
    if body.get("usage"):
        out.append({**base, "choices": [], "usage": body["usage"]})
    return out


def main(argv: list[str] | None = None) -> int:
    return serve_command_line(FakeOpenAIServer, argv)


if __name__ == "__main__":
    sys.exit(main())
