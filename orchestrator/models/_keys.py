"""API keys: where one comes from, and keeping it out of messages.

Providers take an explicit key or an ``env`` mapping (the process
environment only when the caller passes none, at the edge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .base import ModelAuthError

EXPLICIT_SOURCE = "the api_key argument"


@dataclass(frozen=True)
class ApiKey:
    """A key and where it came from. ``source`` is safe to show; the value
    never is (it is left out of the repr)."""

    value: str = field(repr=False)
    source: str

    def redact(self, text: str) -> str:
        return text.replace(self.value, "***") if self.value else text


def find_key(explicit: str | None, env: Mapping[str, str], variables: Sequence[str]) -> ApiKey | None:
    """The explicit key, else the first of ``variables`` set in ``env`` (in
    the order given: the SDK's own precedence), else None."""
    if explicit:
        return ApiKey(explicit, EXPLICIT_SOURCE)
    for name in variables:
        if env.get(name):
            return ApiKey(env[name], name)
    return None


def require_key(explicit: str | None, env: Mapping[str, str], variables: Sequence[str], *, missing: str) -> ApiKey:
    """Like :func:`find_key`, but a missing key is a :class:`ModelAuthError`
    saying ``missing`` (which variables to set, where to get a key)."""
    key = find_key(explicit, env, variables)
    if key is None:
        raise ModelAuthError(missing)
    return key
