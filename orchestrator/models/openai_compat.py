"""Any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM,
llama.cpp's server, LM Studio) through the ``openai`` SDK.

The model is offered ``run_python`` by function calling; tool calls become code
blocks with their call ids, and results go back as ``tool`` messages. Servers
or models without tool support (a 400 that mentions tools) are detected once
and then asked plainly: the loop extracts fenced code from the text.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import openai
from openai import AsyncOpenAI

from ..toolcalls import find_text_tool_calls
from ..types import RUN_PYTHON, CodeBlock, Conversation, Message, ModelTurn, ToolSpec, Usage
from .base import OTHER_CALL_NOTE, ModelAuthError, ModelError, RateLimitError
from .pricing import PriceTable
from .retry import RETRYABLE_STATUSES, CallStats, RetryPolicy, call_with_retries, next_chunk

ToolMode = Literal["auto", "on", "off"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"  # local servers ignore the key, but the SDK wants one


def parse_spec(arg: str) -> tuple[str, str | None]:
    """``MODEL@BASE_URL`` (or just ``MODEL``) from a model string's argument.
    The URL follows the last ``@`` that starts an http(s) URL, so model
    names may contain ``@`` themselves."""
    model, sep, url = arg.rpartition("@")
    if sep and url.startswith(("http://", "https://")) and model:
        return model, url
    if not arg or arg.startswith("@"):
        raise ValueError(f"openai model string needs a model name: openai:MODEL@BASE_URL, got {arg!r}")
    return arg, None


class OpenAIModel:
    """``tools="auto"`` offers function calling and falls back to fenced code
    when the server refuses tools; ``"on"`` never falls back; ``"off"`` never
    offers tools."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tools: ToolMode = "auto",
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        temperature: float | None = None,
        env: Mapping[str, str] | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        stop: Sequence[str] = (),
    ) -> None:
        if tools not in ("auto", "on", "off"):
            raise ValueError(f"OpenAIModel tools must be 'auto', 'on' or 'off', got {tools!r}")
        env = os.environ if env is None else env
        self.model = model
        self.base_url = base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if api_key:
            key, self.key_source = api_key, "the api_key argument"
        elif env.get("OPENAI_API_KEY"):
            key, self.key_source = env["OPENAI_API_KEY"], "OPENAI_API_KEY"
        else:
            key, self.key_source = NO_KEY, "no key (OPENAI_API_KEY is not set)"
        self._secret = key if key != NO_KEY else ""
        self.name = f"openai:{model}@{self.base_url}"
        self.tool_mode: ToolMode = tools
        self.tools_supported = tools != "off"
        self.retry = retry or RetryPolicy()
        self.prices = prices
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})  # server-specific request fields, e.g. llama.cpp's cache_prompt
        self.stop = tuple(stop)
        # What this model does when offered a tool, as observed: True once it
        # fills tool_calls, False once it writes the call as text instead
        # (the loop's tools="auto" then starts later runs with fenced code).
        self.native_tool_calls: bool | None = None
        self.stats = CallStats()
        self._rng = random.Random(seed)
        self._client = AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.retry.timeout_s)

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r}, key from {self.key_source})"

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        turn, requests = await self._call(conversation, tools, stream=False)
        turn.usage.requests = requests
        self._observe_tool_use(turn, tools)
        return turn

    def _observe_tool_use(self, turn: ModelTurn, tools: Sequence[ToolSpec]) -> None:
        if not tools or not self.tools_supported:
            return
        if any(b.source == "tool_call" for b in turn.code_blocks):
            self.native_tool_calls = True
        elif find_text_tool_calls(turn.text, [t.name for t in tools]):
            self.native_tool_calls = False

    def _parse(self, response: Any) -> ModelTurn:
        """A completion as a turn. Runs inside the retried call: a body that
        does not have the expected shape is a malformed (retryable) answer."""
        if not response.choices:
            raise ValueError("the response has no choices")
        choice = response.choices[0]
        message = choice.message
        calls = [{"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                              "arguments": c.function.arguments}}
                 for c in (message.tool_calls or []) if getattr(c, "function", None)]
        return self._turn(message.content or "", calls, choice.finish_reason, response.usage, 1, response.model)

    async def generate_stream(
        self, conversation: Conversation, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ModelTurn]:
        """Text deltas, then the turn; tool-call arguments are assembled from
        their pieces. Only opening the stream is retried."""
        (iterator, chunk), requests = await self._call(conversation, tools, stream=True)
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish_reason = usage = model = None
        while chunk is not None:
            model = chunk.model or model
            usage = chunk.usage or usage
            for choice in chunk.choices or []:
                finish_reason = choice.finish_reason or finish_reason
                delta = choice.delta
                if delta and delta.content:
                    text.append(delta.content)
                    yield delta.content
                for piece in (delta.tool_calls or []) if delta else []:
                    call = calls.setdefault(piece.index, {"id": None, "type": "function",
                                                          "function": {"name": "", "arguments": ""}})
                    call["id"] = piece.id or call["id"]
                    if piece.function:
                        call["function"]["name"] += piece.function.name or ""
                        call["function"]["arguments"] += piece.function.arguments or ""
            chunk = await next_chunk(iterator, classify=self._classify, stats=self.stats,
                                     what=f"the stream from {self.name}")
        ordered = [calls[i] for i in sorted(calls)]
        for i, call in enumerate(ordered):
            call["id"] = call["id"] or f"call_{i}"
        turn = self._turn("".join(text), ordered, finish_reason, usage, requests, model)
        self._observe_tool_use(turn, tools)
        yield turn

    async def aclose(self) -> None:
        await self._client.close()

    # -- requests ------------------------------------------------------------

    def request(self, conversation: Conversation, tools: Sequence[ToolSpec]) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for this conversation."""
        messages = to_messages(conversation)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if self.stop:
            kwargs["stop"] = list(self.stop)
        if self.extra_body:
            kwargs["extra_body"] = dict(self.extra_body)
        history_has_calls = any(m.get("tool_calls") for m in messages)
        if self.tools_supported and tools:
            kwargs["tools"] = [_tool_json(t) for t in tools]
        elif self.tools_supported and history_has_calls:
            kwargs["tools"] = [_tool_json(RUN_PYTHON)]
            kwargs["tool_choice"] = "none"  # the loop wants a plain answer now
        return kwargs

    async def _call(self, conversation: Conversation, tools: Sequence[ToolSpec], *, stream: bool) -> tuple[Any, int]:
        # Built once per call (the conversation does not change while we wait),
        # again only after the tool probe below turns tools off.
        kwargs = self.request(conversation, tools)

        async def once():
            if not stream:
                return self._parse(await self._client.chat.completions.create(**kwargs))
            iterator = aiter(await self._client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}))
            first = await anext(iterator, None)
            if first is None:
                raise ValueError("the stream ended before any event arrived")
            return iterator, first

        sent_before = self.stats.requests
        try:
            return await call_with_retries(once, policy=self.retry, classify=self._classify, stats=self.stats,
                                           model=self.name, rng=self._rng)
        except ModelError as exc:
            if not (self.tool_mode == "auto" and "tools" in kwargs and _refuses_tools(exc)):
                raise
            # The server (or this model) has no function calling: ask for fenced code
            # from now on. The refusal was a probe, not a failed call.
            self.tools_supported = False
            self.stats.failures -= 1
            kwargs = self.request(conversation, tools)
            result, _ = await call_with_retries(once, policy=self.retry, classify=self._classify,
                                                stats=self.stats, model=self.name, rng=self._rng)
            return result, self.stats.requests - sent_before

    def _turn(self, text: str, calls: list[dict[str, Any]], finish_reason: Any, usage: Any, requests: int,
              model: str | None) -> ModelTurn:
        blocks = []
        for call in calls:
            if call["function"]["name"] != RUN_PYTHON.name:
                continue
            code = _code_argument(call["function"]["arguments"])
            if code is not None:
                blocks.append(CodeBlock(code=code, source="tool_call", call_id=call["id"]))
        raw_message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            raw_message["tool_calls"] = calls
        turn_usage = usage_from(usage, requests)
        if self.prices is not None:
            turn_usage.cost_usd = self.prices.cost(self.model, turn_usage)
        return ModelTurn(text=text, code_blocks=blocks, usage=turn_usage, finish_reason=finish_reason,
                         model=model or self.model, raw={"provider": "openai", "message": raw_message})

    def _classify(self, exc: BaseException) -> ModelError | None:
        return classify_error(exc, name=self.name, key_hint=self.key_source, secret=self._secret,
                              timeout_s=self.retry.timeout_s)


# -- conversation -> messages ----------------------------------------------------

def to_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Chat messages for a conversation. Tool calls are answered by ``tool``
    messages (the first call carries the output, the others point to it);
    consecutive user texts are joined, since some chat templates insist on
    alternating roles."""
    messages: list[dict[str, Any]] = []
    if conversation.system:
        messages.append({"role": "system", "content": conversation.system})
    pending: list[dict[str, Any]] = []
    sent_files: set[tuple[str, bytes]] = set()  # a chat resends its files with each message

    def add_user(text: str) -> None:
        if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], str):
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": "user", "content": text})

    def answer(calls: list[dict[str, Any]], text: str) -> None:
        for i, call in enumerate(calls):
            content = text if i == 0 else OTHER_CALL_NOTE
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})

    for index, message in enumerate(conversation.messages):
        if message.role == "model":
            if pending:
                answer(pending, "This call was not run.")
            assistant = assistant_message(message)
            pending = list(assistant.get("tool_calls") or [])
            messages.append(assistant)
        elif message.role == "execution":
            if pending:
                answer(pending, message.text)
                pending = []
            else:
                add_user(message.text)
        elif message.role == "user":
            if pending:
                answer(pending, "This call was not run.")
                pending = []
            text = message.text
            new_files = [f for f in message.files if (f.name, f.data) not in sent_files]
            sent_files.update((f.name, f.data) for f in message.files)
            if new_files:
                listing = ", ".join(f"{f.name} ({len(f.data)} bytes)" for f in new_files)
                text = f"{text}\n\nInput files in the working directory: {listing}."
            add_user(text)
        else:
            raise ValueError(f"conversation message {index} has unknown role {message.role!r}")
    return messages


def assistant_message(message: Message) -> dict[str, Any]:
    turn = message.turn
    raw = turn.raw if turn else None
    if isinstance(raw, dict) and raw.get("provider") == "openai" and isinstance(raw.get("message"), dict):
        return dict(raw["message"])
    text = turn.text if turn else message.text
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [{"id": b.call_id, "type": "function",
              "function": {"name": RUN_PYTHON.name, "arguments": json.dumps({"code": b.code})}}
             for b in (turn.code_blocks if turn else []) if b.source == "tool_call" and b.call_id]
    if calls:
        out["tool_calls"] = calls
    if out["content"] is None and not calls:
        out["content"] = ""
    return out


def _tool_json(tool: ToolSpec) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}


def _code_argument(arguments: str) -> str | None:
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    code = args.get("code") if isinstance(args, dict) else None
    return code if isinstance(code, str) else None


def usage_from(usage: Any, requests: int = 1) -> Usage:
    if usage is None:
        return Usage(requests=requests)
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = (getattr(details, "reasoning_tokens", None) or 0) if details else 0
    completion = usage.completion_tokens or 0
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=max(completion - reasoning, 0),
                 thoughts_tokens=reasoning, requests=requests)


# -- errors ------------------------------------------------------------------------

def classify_error(exc: BaseException, *, name: str, key_hint: str, secret: str, timeout_s: float | None
                   ) -> ModelError | None:
    """An ``openai`` exception as a ModelError (None: not an SDK error).
    Messages never contain the key."""

    def clean(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        message = clean(_error_message(exc))
        if code in (401, 403):
            return ModelAuthError(f"{name} rejected the API key ({key_hint}; HTTP {code}: {message}); "
                                  "set OPENAI_API_KEY", status_code=code)
        if code == 429:
            return RateLimitError(f"{name} rate limit (HTTP 429: {message})", retry_after_s=_retry_after(exc))
        return ModelError(f"{name} request failed (HTTP {code}: {message})", status_code=code,
                          retryable=code in RETRYABLE_STATUSES)
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(f"{name} request timed out after {timeout_s}s", status_code=408, retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ModelError(f"could not reach {name}: {clean(str(cause)) or type(cause).__name__}", retryable=True)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError, TypeError, KeyError, AttributeError)):
        return ModelError(f"{name} sent a response that could not be read: "
                          f"{type(exc).__name__}: {clean(str(exc))[:300]}", retryable=True)
    return None


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(exc.message)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _refuses_tools(exc: ModelError) -> bool:
    return exc.status_code in (400, 404, 422, 500) and "tool" in str(exc).lower()
