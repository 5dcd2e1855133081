"""What a request must pass before it runs: the API key, the body size cap,
and a free run slot.

The key is compared in constant time and never logged or echoed; the body is
read in pieces and dropped as soon as it passes the cap, whatever its
Content-Length claims.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import Request

from .errors import ApiError
from .settings import ServeSettings


def check_key(request: Request, settings: ServeSettings) -> None:
    """401 without a key, 403 with a wrong one (when the server has one)."""
    if settings.api_key is None:
        return
    given = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if not given:
        raise ApiError(
            401, "this server needs an API key: send it in the x-goog-api-key header or the key= query parameter"
        )
    if not hmac.compare_digest(given.encode("utf-8"), settings.api_key.encode("utf-8")):
        raise ApiError(403, "the API key is not valid for this server")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The body as JSON: 413 past ``max_bytes``, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(int(declared), max_bytes)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > max_bytes:
            raise too_large(len(body), max_bytes)
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def too_large(size: int, max_bytes: int) -> ApiError:
    return ApiError(413, f"the request body is over this server's limit of {max_bytes} bytes ({size} bytes or more)")


class RunSlots:
    """At most ``limit`` runs at once; a request finding none free gets 429
    at once (with Retry-After) rather than waiting in a queue it cannot see."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.busy = 0

    def take(self) -> None:
        if self.busy >= self.limit:
            raise ApiError(
                429,
                f"the server is running its maximum of {self.limit} requests; retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.busy += 1

    def give_back(self) -> None:
        self.busy -= 1
