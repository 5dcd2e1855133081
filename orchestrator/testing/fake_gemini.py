"""A fake Gemini API server (a test double) that the real google-genai SDK can talk to.

Serves ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, answers from a script, injects faults and
records every request. Point the SDK at it with::

    with FakeGeminiServer([text_response("hello")]) as fake:
        client = genai.Client(api_key="fake-key",
                              http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta"))

or run ``python -m orchestrator.testing.fake_gemini --script replies.json``
and give codeloop ``GOOGLE_GEMINI_BASE_URL=<printed url>``.

Bodies use the REST wire format (camelCase), as the real API does.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Sequence
from typing import Any

from .fake_http import FakeModelServer, Fault, RecordedRequest, serve_command_line

# The fault types (Fault, Malformed, Disconnect, Delay, Stream) live in fake_http.
__all__ = [
    "FakeGeminiServer",
    "code_result_part",
    "executable_code_part",
    "function_call_part",
    "function_call_response",
    "image_part",
    "invalid_key_fault",
    "response",
    "server_execution_response",
    "text_part",
    "text_response",
    "usage",
]

_ROUTE = re.compile(
    r"^/(?P<version>v1beta|v1|v1alpha)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGeminiServer(FakeModelServer):
    provider = "gemini"
    api = "Gemini"
    replies = "response bodies"

    def banner(self) -> str:
        return f"fake Gemini API at {self.url}  (set GOOGLE_GEMINI_BASE_URL={self.url})"

    def serves(self, path: str) -> bool:
        return bool(_ROUTE.match(path))

    def wrong_key_fault(self) -> Fault:
        return invalid_key_fault()  # the 400 API_KEY_INVALID answer the real API gives

    def is_stream(self, request: RecordedRequest) -> bool:
        return request.path.endswith(":streamGenerateContent")

    def api_key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key")

    def error_body(self, fault: Fault) -> dict[str, Any]:
        status = _STATUS_NAMES.get(fault.status, "UNKNOWN")
        error: dict[str, Any] = {
            "code": fault.status,
            "message": fault.message or status.replace("_", " ").lower(),
            "status": status,
        }
        if fault.status == 400 and "API key not valid" in fault.message:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ]
        return {"error": error}

    def stream_chunks(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        return split_for_stream(reply)

    # -- what the tests read back -----------------------------------------

    @staticmethod
    def model_of(request: RecordedRequest) -> str:
        match = _ROUTE.match(request.path)
        return match["model"] if match else ""

    def contents(self, index: int = -1) -> list[dict[str, Any]]:
        """The ``contents`` of a recorded request (the last one by default)."""
        return self.requests[index].body["contents"]


# -- building replies -------------------------------------------------------


def usage(
    prompt: int = 10, candidates: int = 5, tool_use: int | None = None, thoughts: int | None = None
) -> dict[str, Any]:
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if tool_use is not None:
        meta["toolUsePromptTokenCount"] = tool_use
    if thoughts is not None:
        meta["thoughtsTokenCount"] = thoughts
    meta["totalTokenCount"] = prompt + candidates + (tool_use or 0) + (thoughts or 0)
    return meta


def response(
    parts: list[dict[str, Any]],
    *,
    usage_metadata: dict[str, Any] | None = None,
    finish_reason: str = "STOP",
    model_version: str = "gemini-fake",
) -> dict[str, Any]:
    """A ``GenerateContentResponse`` body with one candidate."""
    body: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish_reason, "index": 0}],
        "modelVersion": model_version,
    }
    body["usageMetadata"] = usage_metadata if usage_metadata is not None else usage()
    return body


def text_part(text: str, *, thought: bool = False, signature: bytes | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = base64.b64encode(signature).decode()
    return part


def function_call_part(
    code: str, *, call_id: str | None = "call-1", name: str = "run_python", signature: bytes | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, "args": {"code": code}}
    if call_id is not None:
        call["id"] = call_id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = base64.b64encode(signature).decode()
    return part


def executable_code_part(code: str) -> dict[str, Any]:
    return {"executableCode": {"language": "PYTHON", "code": code}}


def code_result_part(output: str, outcome: str = "OUTCOME_OK") -> dict[str, Any]:
    return {"codeExecutionResult": {"outcome": outcome, "output": output}}


def image_part(data: bytes, mime_type: str = "image/png") -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(data).decode()}}


def text_response(text: str, **kwargs: Any) -> dict[str, Any]:
    return response([text_part(text)], **kwargs)


def function_call_response(
    code: str, *, text: str = "", call_id: str | None = "call-1", signature: bytes | None = None, **kwargs: Any
) -> dict[str, Any]:
    parts = [text_part(text)] if text else []
    parts.append(function_call_part(code, call_id=call_id, signature=signature))
    return response(parts, **kwargs)


def server_execution_response(
    code: str, output: str, *, outcome: str = "OUTCOME_OK", text: str = "", images: Sequence[bytes] = (), **kwargs: Any
) -> dict[str, Any]:
    """What Gemini's built-in code execution returns: code, its result, any
    figures, then the model's text."""
    parts = [executable_code_part(code), code_result_part(output, outcome)]
    parts += [image_part(img) for img in images]
    if text:
        parts.append(text_part(text))
    return response(parts, **kwargs)


def invalid_key_fault() -> Fault:
    return Fault(400, "API key not valid. Please pass a valid API key.")


def split_for_stream(body: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """Stream a response as the real API does: text parts split into several
    chunks, other parts whole, usage on the last chunk."""
    candidate = body.get("candidates", [{}])[0]
    parts = candidate.get("content", {}).get("parts", [])
    chunks: list[dict[str, Any]] = []
    for part in parts:
        if set(part) == {"text"} and len(part["text"]) >= pieces:
            size = -(-len(part["text"]) // pieces)
            for i in range(0, len(part["text"]), size):
                chunks.append({"text": part["text"][i : i + size]})
        else:
            chunks.append(part)
    if not chunks:
        return [body]
    events = []
    for i, part in enumerate(chunks):
        last = i == len(chunks) - 1
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        event: dict[str, Any] = {"candidates": [cand], "modelVersion": body.get("modelVersion", "gemini-fake")}
        if last:
            cand["finishReason"] = candidate.get("finishReason", "STOP")
        if last and "usageMetadata" in body:
            event["usageMetadata"] = body["usageMetadata"]
        events.append(event)
    return events


def main(argv: list[str] | None = None) -> int:
    return serve_command_line(FakeGeminiServer, argv)


if __name__ == "__main__":
    sys.exit(main())
