"""Failed model calls as :class:`ModelError` kinds, the same for every provider.

Each provider knows its SDK's exception types; what an HTTP status means
(auth, rate limit, retryable or not) and how a wait is read from the answer is
decided here once. Every message is redacted with the call's key first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ._keys import ApiKey
from .base import ModelAuthError, ModelError, RateLimitError

# 529: Anthropic's "overloaded"; the others as everywhere.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
AUTH_STATUSES = frozenset({401, 403})


def status_error(
    who: str, code: int, message: str, *, key: ApiKey | None, key_help: str, auth: bool = False,
    retry_after_s: float | None = None,
) -> ModelError:
    """The error for an HTTP ``code`` answer. ``who`` names the provider or
    endpoint; ``key_help`` says which variable to fix on an auth error;
    ``auth`` marks answers with another status that reject the key (Gemini's
    400 API_KEY_INVALID)."""
    message = redact(message, key)
    if code in AUTH_STATUSES or auth:
        source = key.source if key else "no key"
        return ModelAuthError(f"{who} rejected the API key from {source} (HTTP {code}: {message}); {key_help}",
                              status_code=code)
    if code == 429:
        return RateLimitError(f"{who} rate limit (HTTP 429: {message})", retry_after_s=retry_after_s)
    return ModelError(f"{who} request failed (HTTP {code}: {message})", status_code=code,
                      retryable=code in RETRYABLE_STATUSES)


def timeout_error(who: str, timeout_s: float | None) -> ModelError:
    return ModelError(f"{who} request timed out after {timeout_s}s", status_code=408, retryable=True)


def connection_error(who: str, exc: BaseException, key: ApiKey | None) -> ModelError:
    return ModelError(f"could not reach {who}: {redact(str(exc), key) or type(exc).__name__}", retryable=True)


def unreadable_error(who: str, exc: BaseException, key: ApiKey | None) -> ModelError:
    """A body the SDK could not decode: a malformed answer, worth asking again."""
    return ModelError(f"{who} sent a response that could not be read: "
                      f"{type(exc).__name__}: {redact(str(exc), key)[:300]}", retryable=True)


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for: seconds, or an HTTP date."""
    value = headers.get("retry-after") if headers is not None and hasattr(headers, "get") else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def redact(text: str, key: ApiKey | None) -> str:
    return key.redact(text) if key else text
