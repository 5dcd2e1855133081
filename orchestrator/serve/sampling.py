"""A request's ``generationConfig`` (temperature, maxOutputTokens) applied to a backend.

Backends are built once, when the server starts; a request that sets its own
sampling gets a variant of its backend for that request only:

- a local model (``local:NAME``): a second :class:`LocalModel` with the new
  settings, joining the running llama.cpp server (sampling is per request
  there, so no second server starts); it is closed after the request;
- models that keep ``temperature`` / ``max_tokens`` as plain attributes
  (OpenAI-compatible, Gemini): a shallow copy sharing the HTTP client;
- anything else (scripted, replay): unchanged, since it has no sampling.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..models.base import Model
from ..models.local import LocalModel


@dataclass
class Variant:
    model: Model
    close: Callable[[], Awaitable[None]] | None = None  # for a variant that holds resources
    applied: bool = False  # False: the backend has no sampling settings to change


async def with_sampling(model: Model, temperature: float | None, max_tokens: int | None) -> Variant:
    changes = {k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None}
    if not changes:
        return Variant(model, applied=True)
    if isinstance(model, LocalModel):
        # The backend holds the server, so the variant's leaving never stops it.
        await model.start()
        settings = dataclasses.replace(
            model.settings,
            temperature=changes.get("temperature", model.settings.temperature),
            max_tokens=int(changes.get("max_tokens", model.settings.max_tokens)),
        )
        local = LocalModel(model.spec, settings)
        return Variant(local, close=local.aclose, applied=True)
    fields = vars(model) if hasattr(model, "__dict__") else {}
    if all(name in fields for name in changes):
        variant = copy.copy(model)
        for name, value in changes.items():
            setattr(variant, name, value)
        return Variant(variant, applied=True)
    return Variant(model, applied=False)
