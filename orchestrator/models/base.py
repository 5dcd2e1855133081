"""The model seam: anything that can turn a conversation into a :class:`ModelTurn`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..types import Conversation, ModelTurn, ToolSpec

# The loop runs all of a turn's tool calls as one program, so providers that
# want one answer per call give the output to the first and this to the rest.
OTHER_CALL_NOTE = "This call's code ran together with the first call of the turn; its output is in that response."


@runtime_checkable
class Model(Protocol):
    """``generate`` is required. ``tools`` is empty when the loop wants a plain
    answer (the final summary), so a model must not call tools then."""

    name: str

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn: ...


def model_trait(model: object, name: str, default: Any = None) -> Any:
    """An optional attribute of a model (``context_length``, ``max_tokens``,
    ``native_tool_calls``, ``profile_name``), looked up through wrappers that
    expose the model they wrap as ``wrapped`` (recording, rate-limit gates)."""
    seen = 0
    while model is not None and seen < 8:
        value = getattr(model, name, None)
        if value is not None:
            return value
        model = getattr(model, "wrapped", None)
        seen += 1
    return default


@runtime_checkable
class StreamingModel(Model, Protocol):
    """Optional: yield text deltas as they arrive, then the complete turn last."""

    def generate_stream(
        self, conversation: Conversation, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ModelTurn]: ...


class ModelError(Exception):
    """A model call failed. ``retryable`` errors were already retried by the
    model's own policy before reaching the loop; the loop records them and
    ends the run as failed, leaving its state intact for a later resume."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class ModelAuthError(ModelError):
    """A missing or rejected API key: never retried."""


class RateLimitError(ModelError):
    """HTTP 429 after the model's own retries; batch runners back off together."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, status_code=429, retryable=True)
        self.retry_after_s = retry_after_s
