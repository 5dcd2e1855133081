"""Errors in Gemini's JSON shape: ``{"error": {"code", "message", "status"}}``."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

# google.rpc status names for the HTTP codes this server sends, as Gemini does.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """A request that gets an error answer; ``headers`` e.g. Retry-After."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}

    @property
    def status(self) -> str:
        return STATUS_NAMES.get(self.code, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.code, headers=self.headers)


def bad_field(where: str, problem: str) -> ApiError:
    """A 400 naming the field, as ``contents[0].parts[1].inlineData.data: not base64``."""
    return ApiError(400, f"{where}: {problem}" if where else problem)
