"""Any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM,
llama.cpp's server, LM Studio) through the ``openai`` SDK.

The model is offered ``run_python`` by function calling; tool calls become code
blocks with their call ids, and results go back as ``tool`` messages. Servers
or models without tool support (a 400 that mentions tools) are detected once
and then asked plainly: the loop extracts fenced code from the text.
Images (input images, figures) go as ``image_url`` data URLs to servers that
take them.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import openai
from openai import AsyncOpenAI

from executors.base import Artifact, InputFile

from ..toolcalls import find_text_tool_calls
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
from ._keys import ApiKey, find_key
from .base import ModelError
from .pricing import PriceTable
from .retry import CallStats, RetryingProvider, RetryPolicy, first_chunk

ToolMode = Literal["auto", "on", "off"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"  # local servers ignore the key, but the SDK wants one
KEY_VARIABLES = ("OPENAI_API_KEY",)
KEY_HELP = "set OPENAI_API_KEY"
FIGURES_NOTE = "The images above, from the code that ran:"


class ToolSupport(str, enum.Enum):
    """Whether requests offer ``run_python``: ``offered``; ``refused`` once
    the server said it has no function calling (``tools="auto"`` only; it
    is then asked for fenced code); ``off`` when the user said so."""

    OFFERED = "offered"
    REFUSED = "refused"
    OFF = "off"


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


class OpenAIModel(RetryingProvider):
    """``tools="auto"`` offers function calling and falls back to fenced code
    when the server refuses tools; ``"on"`` never falls back; ``"off"`` never
    offers tools. ``images``: whether the model takes images (default: yes
    at OpenAI itself, no elsewhere, since most local servers do not)."""

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
        images: bool | None = None,
    ) -> None:
        if tools not in ("auto", "on", "off"):
            raise ValueError(f"OpenAIModel tools must be 'auto', 'on' or 'off', got {tools!r}")
        env = os.environ if env is None else env
        self.model = model
        self.base_url = base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self._key: ApiKey | None = find_key(api_key, env, KEY_VARIABLES)
        self.key_source = self._key.source if self._key else "no key (OPENAI_API_KEY is not set)"
        self.name = f"openai:{model}@{self.base_url}"
        self.tool_mode: ToolMode = tools
        self.tool_support = ToolSupport.OFF if tools == "off" else ToolSupport.OFFERED
        self.takes_images = images if images is not None else self.base_url.rstrip("/") == DEFAULT_BASE_URL
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
        self._client = AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._key.value if self._key else NO_KEY,
            max_retries=0,
            timeout=self.retry.timeout_s,
        )

    @property
    def tools_supported(self) -> bool:
        return self.tool_support is ToolSupport.OFFERED

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
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in (message.tool_calls or [])
            if getattr(c, "function", None)
        ]
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
                    call = calls.setdefault(
                        piece.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                    )
                    call["id"] = piece.id or call["id"]
                    if piece.function:
                        call["function"]["name"] += piece.function.name or ""
                        call["function"]["arguments"] += piece.function.arguments or ""
            chunk = await self._next_chunk(iterator, f"the stream from {self.name}")
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
            return await first_chunk(
                await self._client.chat.completions.create(
                    **kwargs, stream=True, stream_options={"include_usage": True}
                )
            )

        sent_before = self.stats.requests
        probing = self.tool_mode == "auto" and "tools" in kwargs
        try:
            return await self._with_retries(once, declined=_refuses_tools if probing else None)
        except ModelError as exc:
            if not (probing and _refuses_tools(exc)):
                raise
        # The server (or this model) has no function calling: ask for fenced
        # code from now on. The refusal is counted as declined, not failed.
        self.tool_support = ToolSupport.REFUSED
        kwargs = self.request(conversation, tools)
        result, _ = await self._with_retries(once)
        return result, self.stats.requests - sent_before

    def _turn(
        self, text: str, calls: list[dict[str, Any]], finish_reason: Any, usage: Any, requests: int, model: str | None
    ) -> ModelTurn:
        blocks = []
        for call in calls:
            if not is_run_python(call["function"]["name"]):
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
        return ModelTurn(
            text=text,
            code_blocks=blocks,
            usage=turn_usage,
            finish_reason=finish_reason,
            model=model or self.model,
            raw={"provider": "openai", "message": raw_message},
        )

    def _classify(self, exc: BaseException) -> ModelError | None:
        return classify_error(exc, name=self.name, key=self._key, timeout_s=self.retry.timeout_s)


# -- conversation -> messages ----------------------------------------------------


def to_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Chat messages for a conversation. Tool calls are answered by ``tool``
    messages (the first call carries the output, the others point to it);
    consecutive user texts are joined, since some chat templates insist on
    alternating roles. Images go in user content as ``image_url`` parts."""
    writer = _MessagesWriter()
    if conversation.system:
        writer.messages.append({"role": "system", "content": conversation.system})
    walk(conversation, writer)
    return writer.messages


class _MessagesWriter:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add_user(self, text: str, images: Sequence[Artifact] = ()) -> None:
        content: str | list[dict[str, Any]] = text
        if images:
            content = ([{"type": "text", "text": text}] if text else []) + [image_part(i) for i in images]
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "user":
            self.messages.append({"role": "user", "content": content})
        elif isinstance(last["content"], str) and isinstance(content, str):
            last["content"] += "\n\n" + content
        else:
            last["content"] = _as_parts(last["content"]) + _as_parts(content)

    def model_turn(self, message: ModelMessage) -> list[dict[str, Any]]:
        assistant = assistant_message(message)
        self.messages.append(assistant)
        return list(assistant.get("tool_calls") or [])

    def answer_calls(self, calls: Sequence[dict[str, Any]], execution: ExecutionMessage | None) -> None:
        for i, call in enumerate(calls):
            self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": answer_text(i, execution)})
        if execution is not None and execution.images:  # tool messages hold text only
            self.add_user(FIGURES_NOTE, execution.images)

    def execution_text(self, execution: ExecutionMessage) -> None:
        self.add_user(execution.feedback, execution.images)

    def user(self, message: UserMessage, new_files: list[InputFile]) -> None:
        text = f"{message.text}\n\n{files_note(new_files)}" if new_files else message.text
        self.add_user(text, message.images)


def image_part(image: Artifact) -> dict[str, Any]:
    data = base64.b64encode(image.data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{image.mime_type};base64,{data}"}}


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def assistant_message(message: ModelMessage) -> dict[str, Any]:
    raw = own_raw(message, "openai")
    if raw is not None and isinstance(raw.get("message"), dict):
        return dict(raw["message"])
    text = message.turn.text
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [
        {
            "id": b.call_id,
            "type": "function",
            "function": {"name": RUN_PYTHON.name, "arguments": json.dumps({"code": b.code})},
        }
        for b in tool_calls_of(message)
        if b.call_id
    ]
    if calls:
        out["tool_calls"] = calls
    if out["content"] is None and not calls:
        out["content"] = ""
    return out


def _tool_json(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


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
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(prompt_details, "cached_tokens", None) or 0) if prompt_details else 0
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=max(completion - reasoning, 0),
        thoughts_tokens=reasoning,
        requests=requests,
        cache_read_tokens=cached,
    )


# -- errors ------------------------------------------------------------------------


def classify_error(exc: BaseException, *, name: str, key: ApiKey | None, timeout_s: float | None) -> ModelError | None:
    """An ``openai`` exception as a ModelError (None: not an SDK error).
    Messages never contain the key."""
    return _errors.classify_stainless(
        exc, openai, who=name, key=key, key_help=KEY_HELP, timeout_s=timeout_s, message_of=_error_message
    )


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(exc.message)


def _refuses_tools(exc: ModelError) -> bool:
    return exc.status_code in (400, 404, 422, 500) and "tool" in str(exc).lower()
