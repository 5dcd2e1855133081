"""Claude through the official ``anthropic`` SDK (the ``anthropic`` extra).

The model is offered ``run_python`` as a tool; its ``tool_use`` blocks become
code blocks with their ids, and results go back as ``tool_result`` blocks,
with the figures the code drew inside the first result. Each model turn keeps
Claude's own content blocks in ``ModelTurn.raw`` and sends them back
unchanged, so thinking blocks and their signatures survive multi-turn
requests. The SDK's own retries are off: 429 and 529 (overloaded) are retried
by :mod:`.retry`, like every provider.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from executors.base import Artifact, InputFile

from ..types import (
    RUN_PYTHON,
    CodeBlock,
    Conversation,
    ExecutionMessage,
    ModelMessage,
    ModelTurn,
    ToolSpec,
    Usage,
    UserMessage,
)
from . import _errors
from ._conversation import answer_text, files_note, is_run_python, own_raw, tool_calls_of, walk
from ._keys import ApiKey, require_key
from .base import ModelError
from .pricing import ANTHROPIC_PRICES, PriceTable
from .retry import CallStats, RetryingProvider, RetryPolicy, first_chunk

KEY_VARIABLES = ("ANTHROPIC_API_KEY",)
MISSING_KEY = (
    "no Anthropic API key: set ANTHROPIC_API_KEY or pass api_key=...; "
    "get one at https://console.anthropic.com/settings/keys"
)
KEY_HELP = "check ANTHROPIC_API_KEY"
DEFAULT_BASE_URL = "https://api.anthropic.com"
BASE_URL_VARIABLE = "ANTHROPIC_BASE_URL"  # the SDK's variable for another endpoint
DEFAULT_MAX_TOKENS = 4096  # the API requires a bound on every request
PROVIDER = "anthropic"
# The loop recognises OpenAI's and Gemini's names for a reply cut off at the limit.
STOP_REASONS = {"max_tokens": "length"}


def load_sdk() -> Any:
    """The ``anthropic`` package, imported only when this provider is used."""
    try:
        import anthropic
    except ImportError:
        raise ModelError(
            "the anthropic: models need the anthropic package: pip install 'codeloop[anthropic]'"
        ) from None
    return anthropic


class AnthropicModel(RetryingProvider):
    """A :class:`~orchestrator.models.base.StreamingModel` for Claude.

    ``env`` is where ``ANTHROPIC_API_KEY`` (and ``ANTHROPIC_BASE_URL``) are
    looked up when not given (the process environment when None). Both are
    always passed to the SDK, so it reads no credentials of its own.
    ``prompt_cache``: mark the conversation for Anthropic's prompt cache. The
    loop resends the whole history with every retry, so from the second
    request on most of the prompt is read from the cache at a tenth of the
    price (the first write costs 1.25 times).
    """

    takes_images = True
    native_tool_calls = True

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = ANTHROPIC_PRICES,
        temperature: float | None = None,
        max_tokens: int | None = None,
        env: Mapping[str, str] | None = None,
        seed: int | None = None,
        prompt_cache: bool = True,
    ) -> None:
        sdk = load_sdk()
        env = os.environ if env is None else env
        self._sdk = sdk
        self._key: ApiKey = require_key(api_key, env, KEY_VARIABLES, missing=MISSING_KEY)
        self.key_source = self._key.source
        self.model = model
        self.name = f"anthropic:{model}"
        self.base_url = base_url or env.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL
        self.retry = retry or RetryPolicy()
        self.prices = prices
        self.temperature = temperature
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        self.prompt_cache = prompt_cache
        self.stats = CallStats()
        self._rng = random.Random(seed)
        self._client = sdk.AsyncAnthropic(
            api_key=self._key.value, base_url=self.base_url, max_retries=0, timeout=self.retry.timeout_s
        )

    def __repr__(self) -> str:
        return f"AnthropicModel(model={self.model!r}, base_url={self.base_url!r}, key from {self.key_source})"

    # -- the Model protocol --------------------------------------------------

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        kwargs = self.request(conversation, tools)

        async def once() -> ModelTurn:
            message = await self._client.messages.create(**kwargs)
            blocks = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
            return self._turn(blocks, message.stop_reason, message.usage.model_dump(), message.model)

        turn, requests = await self._with_retries(once)
        turn.usage.requests = requests
        return turn

    async def generate_stream(
        self, conversation: Conversation, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ModelTurn]:
        """Text deltas as they arrive, then the whole turn. Only opening the
        stream is retried: once text was shown it cannot be taken back."""
        kwargs = self.request(conversation, tools)

        async def open_stream():
            return await first_chunk(await self._client.messages.create(**kwargs, stream=True))

        (iterator, event), requests = await self._with_retries(open_stream)
        message = _StreamedMessage()
        while event is not None:
            delta = message.add(event.model_dump(mode="json", exclude_none=True))
            if delta:
                yield delta
            event = await self._next_chunk(iterator, f"the stream from {self.name}")
        if not message.started:
            raise ModelError(f"the stream from {self.name} ended without a message")
        turn = self._turn(message.blocks(), message.stop_reason, message.usage, message.model)
        turn.usage.requests = requests
        yield turn

    async def aclose(self) -> None:
        await self._client.close()

    # -- requests ------------------------------------------------------------

    def request(self, conversation: Conversation, tools: Sequence[ToolSpec]) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for this conversation."""
        messages = to_messages(conversation)
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": messages}
        if conversation.system:
            kwargs["system"] = conversation.system
        if self.temperature is not None:
            kwargs["temperature"] = min(self.temperature, 1.0)  # Claude's range is [0, 1]
        if self.prompt_cache:
            kwargs["cache_control"] = {"type": "ephemeral"}  # the API marks the last cacheable block
        history_has_calls = any(
            block.get("type") == "tool_use" for m in messages if m["role"] == "assistant" for block in m["content"]
        )
        if tools:
            kwargs["tools"] = [tool_json(t) for t in tools]
        elif history_has_calls:
            # The history holds tool_use blocks, which need the tool declared;
            # the loop wants a plain answer now, so calling it is not allowed.
            kwargs["tools"] = [tool_json(RUN_PYTHON)]
            kwargs["tool_choice"] = {"type": "none"}
        return kwargs

    # -- responses -----------------------------------------------------------

    def _turn(
        self, blocks: list[dict[str, Any]], stop_reason: str | None, usage: Mapping[str, Any] | None, model: str | None
    ) -> ModelTurn:
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        code_blocks = []
        for block in blocks:
            code = (block.get("input") or {}).get("code") if block.get("type") == "tool_use" else None
            if is_run_python(block.get("name", "")) and isinstance(code, str):
                code_blocks.append(CodeBlock(code=code, source="tool_call", call_id=block.get("id")))
        turn_usage = usage_from(usage)
        if self.prices is not None:
            turn_usage.cost_usd = self.prices.cost(self.model, turn_usage)
        return ModelTurn(
            text=text,
            code_blocks=code_blocks,
            usage=turn_usage,
            finish_reason=STOP_REASONS.get(stop_reason or "", stop_reason),
            model=model or self.model,
            raw={"provider": PROVIDER, "content": [_sendable(b) for b in blocks]},
        )

    def _classify(self, exc: BaseException) -> ModelError | None:
        return classify_error(exc, self._sdk, key=self._key, timeout_s=self.retry.timeout_s)


# -- conversation -> messages ----------------------------------------------------


def tool_json(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


def to_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Claude messages for a conversation: user and assistant turns taking
    turns, each a list of content blocks (consecutive user entries merged)."""
    writer = _MessagesWriter()
    walk(conversation, writer)
    return writer.messages


class _MessagesWriter:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": blocks})

    def model_turn(self, message: ModelMessage) -> list[str]:
        blocks = assistant_blocks(message)
        self.add("assistant", blocks)
        return [b["id"] for b in blocks if b.get("type") == "tool_use"]

    def answer_calls(self, calls: Sequence[str], execution: ExecutionMessage | None) -> None:
        failed = execution is None or not execution.result.ok
        results = []
        for i, call_id in enumerate(calls):
            content = [text_block(answer_text(i, execution))]
            if i == 0 and execution is not None:
                content += [image_block(image) for image in execution.images]
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call_id,
                    "content": content,
                    "is_error": execution is None or (failed and i == 0),
                }
            )
        self.add("user", results)

    def execution_text(self, execution: ExecutionMessage) -> None:
        self.add("user", [text_block(execution.feedback)] + [image_block(i) for i in execution.images])

    def user(self, message: UserMessage, new_files: list[InputFile]) -> None:
        text = f"{message.text}\n\n{files_note(new_files)}" if new_files else message.text
        self.add("user", [text_block(text)] + [image_block(i) for i in message.images])


def assistant_blocks(message: ModelMessage) -> list[dict[str, Any]]:
    """Claude's own blocks for a model turn (sent back exactly), or blocks
    rebuilt from the text and tool calls of a turn another model wrote."""
    raw = own_raw(message, PROVIDER)
    if raw is not None and isinstance(raw.get("content"), list) and raw["content"]:
        return [dict(b) for b in raw["content"]]
    text = message.turn.text
    blocks = [text_block(text)] if text or not tool_calls_of(message) else []
    blocks += [
        {"type": "tool_use", "id": b.call_id or f"call_{i}", "name": RUN_PYTHON.name, "input": {"code": b.code}}
        for i, b in enumerate(tool_calls_of(message))
    ]
    return blocks


def text_block(text: str) -> dict[str, Any]:
    # The API rejects empty text blocks.
    return {"type": "text", "text": text or "(empty)"}


def image_block(image: Artifact) -> dict[str, Any]:
    data = base64.b64encode(image.data).decode("ascii")
    return {"type": "image", "source": {"type": "base64", "media_type": image.mime_type, "data": data}}


# -- response -> turn ----------------------------------------------------------

_SENDABLE = {
    "text": ("type", "text"),
    "tool_use": ("type", "id", "name", "input"),
    "thinking": ("type", "thinking", "signature"),
    "redacted_thinking": ("type", "data"),
}


def _sendable(block: dict[str, Any]) -> dict[str, Any]:
    """A response block as a request accepts it (responses carry extra fields)."""
    keys = _SENDABLE.get(block.get("type", ""))
    return {k: block[k] for k in keys if k in block} if keys else block


def usage_from(usage: Mapping[str, Any] | None) -> Usage:
    """Claude's ``input_tokens`` leave out the cached part; here, as in
    Gemini's terms, input counts every prompt token and the cache counts say
    which of them were read from or written to the cache."""
    if not usage:
        return Usage()
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(usage.get("input_tokens") or 0) + read + write,
        output_tokens=usage.get("output_tokens") or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


class _StreamedMessage:
    """A message assembled from stream events (as dicts): text deltas are
    returned for the caller to show, tool input arrives as JSON pieces."""

    def __init__(self) -> None:
        self.started = False
        self.model: str | None = None
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, str] = {}

    def add(self, event: dict[str, Any]) -> str:
        kind = event.get("type")
        if kind == "message_start":
            self.started = True
            self.model = event["message"].get("model")
            self.usage.update(event["message"].get("usage") or {})
        elif kind == "content_block_start":
            self._blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        return ""

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta["text"]
            return delta["text"]
        if kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + delta.get("partial_json", "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        return ""

    def blocks(self) -> list[dict[str, Any]]:
        out = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.get("type") == "tool_use" and index in self._json:
                try:
                    block["input"] = json.loads(self._json[index] or "{}")
                except json.JSONDecodeError as exc:
                    raise ModelError(f"a streamed tool call's input is not JSON: {exc}") from None
            out.append(block)
        return out


# -- errors ------------------------------------------------------------------------


def classify_error(exc: BaseException, sdk: Any, *, key: ApiKey | None, timeout_s: float | None) -> ModelError | None:
    """An ``anthropic`` exception as a ModelError (None: not an SDK error).
    429 and 529 (overloaded) are retryable; messages never contain the key."""
    error = _errors.classify_stainless(
        exc, sdk, who="Anthropic", key=key, key_help=KEY_HELP, timeout_s=timeout_s, message_of=_error_message
    )
    if error is None and isinstance(exc, sdk.APIError):  # an error event inside a stream
        return ModelError(f"Anthropic reported an error: {_errors.redact(str(exc), key)}", retryable=True)
    return error


def _error_message(exc: Any) -> str:
    body = exc.body
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict) and inner.get("message"):
        kind = f"{inner['type']}: " if inner.get("type") else ""
        return f"{kind}{inner['message']}"
    return str(exc.message)
