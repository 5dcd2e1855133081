"""Gemini through the google-genai SDK, in two modes.

``client`` (default): the model gets a ``run_python(code)`` function; its calls
become code for codeloop's executor, and the results go back as function
responses. Fenced code in plain text works too.

``server``: Gemini's built-in code execution runs the code on Google's side;
the executable code, results and figures it returns become remote attempts.

Each model turn keeps Gemini's own ``Content`` (as JSON) in ``ModelTurn.raw``
and is sent back unchanged, so function calls and thought signatures survive
multi-turn requests.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal

import httpx2
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from executors.base import InputFile

from ..images import image_mime
from ..types import RUN_PYTHON, Conversation, ExecutionMessage, ModelMessage, ModelTurn, ToolSpec, UserMessage
from . import _errors
from ._conversation import answer_text, files_note, is_run_python, own_raw, tool_calls_of, walk
from ._keys import ApiKey, require_key
from .base import ModelError
from .gemini_response import block_reason, enum_name, merge_text_parts, parse_content, usage_from
from .pricing import GEMINI_PRICES, PriceTable
from .retry import CallStats, RetryingProvider, RetryPolicy, first_chunk

Mode = Literal["client", "server"]

KEY_VARIABLES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's own order of precedence
BASE_URL_VARIABLE = "GOOGLE_GEMINI_BASE_URL"  # the SDK's variable for another endpoint

# Text types Gemini's documents accept by name; other text (.cpp, .java, .ts,
# .json...) goes as plain text. Not guessed with mimetypes: its answer depends
# on the machine (.ts is a Qt translation file on some, a video on others).
INLINE_TEXT_TYPES = {
    ".csv": "text/csv",
    ".xml": "text/xml",
    ".py": "text/x-python",
    ".js": "text/javascript",
    ".html": "text/html",
    ".md": "text/md",
    ".txt": "text/plain",
}

SERVER_MODE_NOTE = (
    "In this session code runs through your built-in code execution tool; there is no run_python function to call."
)


class MalformedFunctionCall(Exception):
    """Gemini ended with MALFORMED_FUNCTION_CALL and nothing else: the model
    wrote a call the API could not parse. Asking again usually works."""


MISSING_KEY = (
    "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) or pass api_key=...; "
    "get one at https://aistudio.google.com/apikey"
)
KEY_HELP = "check GEMINI_API_KEY / GOOGLE_API_KEY"


class GeminiModel(RetryingProvider):
    """A :class:`~orchestrator.models.base.StreamingModel` for Gemini.

    ``retry`` sets attempts, backoff and the per-request timeout;
    ``prices`` estimates cost (None for no estimate); ``max_file_bytes``
    bounds each input file sent inline in server mode. Gemini takes images:
    input images and figures go inline in both modes.
    """

    takes_images = True

    def __init__(
        self,
        model: str = "gemini-2.5-flash",
        api_key: str | None = None,
        mode: Mode = "client",
        *,
        base_url: str | None = None,
        api_version: str = "v1beta",
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = GEMINI_PRICES,
        max_file_bytes: int = 2 * 1024 * 1024,
        temperature: float | None = None,
        max_tokens: int | None = None,
        thinking_budget: int | None = None,
        env: Mapping[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        if mode not in ("client", "server"):
            raise ValueError(f"GeminiModel mode must be 'client' or 'server', got {mode!r}")
        env = os.environ if env is None else env
        self._key: ApiKey = require_key(api_key, env, KEY_VARIABLES, missing=MISSING_KEY)
        self.key_source = self._key.source
        self.model = model
        self.mode: Mode = mode
        self.name = f"{'gemini-server' if mode == 'server' else 'gemini'}:{model}"
        self.retry = retry or RetryPolicy()
        self.prices = prices
        self.max_file_bytes = max_file_bytes
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.thinking_budget = thinking_budget
        self.base_url = base_url or env.get(BASE_URL_VARIABLE) or None
        self.stats = CallStats()
        self._rng = random.Random(seed)
        timeout_ms = int(self.retry.timeout_s * 1000) if self.retry.timeout_s else None
        self._client = genai.Client(
            api_key=self._key.value,
            vertexai=False,
            http_options=types.HttpOptions(base_url=self.base_url, api_version=api_version, timeout=timeout_ms),
        )

    def __repr__(self) -> str:  # the default repr would not show the key, but say so plainly
        return f"GeminiModel(model={self.model!r}, mode={self.mode!r}, key from {self.key_source})"

    # -- the Model protocol --------------------------------------------------

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        contents, config = self.request(conversation, tools)

        async def once() -> types.GenerateContentResponse:
            response = await self._client.aio.models.generate_content(
                model=self.model, contents=contents, config=config
            )
            candidate = response.candidates[0] if response.candidates else None
            if (
                candidate
                and enum_name(candidate.finish_reason) == "MALFORMED_FUNCTION_CALL"
                and not (candidate.content and candidate.content.parts)
            ):
                raise MalformedFunctionCall(candidate.finish_message or "")
            return response

        response, requests = await self._with_retries(once)
        if not response.candidates:
            raise ModelError(f"Gemini returned no answer ({block_reason(response)})")
        candidate = response.candidates[0]
        return self._turn(
            candidate.content, candidate.finish_reason, response.usage_metadata, requests, response.model_version
        )

    async def generate_stream(
        self, conversation: Conversation, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ModelTurn]:
        """Text deltas as they arrive, then the whole turn. Only opening the
        stream is retried: once text was shown it cannot be taken back."""
        contents, config = self.request(conversation, tools)

        async def open_stream():
            return await first_chunk(
                await self._client.aio.models.generate_content_stream(
                    model=self.model, contents=contents, config=config
                )
            )

        (iterator, chunk), requests = await self._with_retries(open_stream)
        parts: list[types.Part] = []
        finish_reason = usage_metadata = model_version = None
        while chunk is not None:
            if chunk.candidates:
                candidate = chunk.candidates[0]
                finish_reason = candidate.finish_reason or finish_reason
                for part in (candidate.content.parts or []) if candidate.content else []:
                    parts.append(part)
                    if part.text and not part.thought:
                        yield part.text
            usage_metadata = chunk.usage_metadata or usage_metadata
            model_version = chunk.model_version or model_version
            chunk = await self._next_chunk(iterator, "the Gemini stream")
        if not parts and finish_reason is None:
            raise ModelError("Gemini's stream ended without an answer")
        content = types.Content(role="model", parts=merge_text_parts(parts))
        yield self._turn(content, finish_reason, usage_metadata, requests, model_version)

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    # -- requests ------------------------------------------------------------

    def request(
        self, conversation: Conversation, tools: Sequence[ToolSpec]
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        """The contents and config this model sends for ``conversation``."""
        contents = to_contents(conversation, mode=self.mode, max_file_bytes=self.max_file_bytes)
        system = conversation.system
        if self.mode == "server" and system:
            system = f"{system}\n\n{SERVER_MODE_NOTE}"
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=self.temperature,
            max_output_tokens=self.max_tokens,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if self.thinking_budget is not None:
            config.thinking_config = types.ThinkingConfig(thinking_budget=self.thinking_budget)
        if self.mode == "server":
            if tools:
                config.tools = [types.Tool(code_execution=types.ToolCodeExecution())]
        elif tools:
            config.tools = [function_tool(tools)]
        elif any(part.function_call for content in contents for part in content.parts or []):
            # The history holds function calls: declare the tool (Gemini wants
            # it) but forbid calling it, since the loop wants a plain answer.
            config.tools = [function_tool([RUN_PYTHON])]
            config.tool_config = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
            )
        return contents, config

    # -- responses -----------------------------------------------------------

    def _turn(
        self,
        content: types.Content | None,
        finish_reason: Any,
        usage_metadata: Any,
        requests: int,
        model_version: str | None,
    ) -> ModelTurn:
        content = content or types.Content(role="model", parts=[])
        usage = usage_from(usage_metadata, requests)
        if self.prices is not None:
            usage.cost_usd = self.prices.cost(self.model, usage)
        turn = parse_content(content)
        turn.usage = usage
        turn.finish_reason = enum_name(finish_reason)
        turn.model = model_version or self.model
        return turn

    def _classify(self, exc: BaseException) -> ModelError | None:
        return classify_error(exc, provider="Gemini", key=self._key, timeout_s=self.retry.timeout_s)


# -- conversation -> contents --------------------------------------------------


def function_tool(tools: Sequence[ToolSpec]) -> types.Tool:
    return types.Tool(
        function_declarations=[
            types.FunctionDeclaration(name=t.name, description=t.description, parameters_json_schema=t.parameters)
            for t in tools
        ]
    )


def to_contents(
    conversation: Conversation, *, mode: Mode = "client", max_file_bytes: int = 2 * 1024 * 1024
) -> list[types.Content]:
    """Translate a conversation into Gemini contents.

    Model turns are replayed from ``raw`` when they have it. An execution
    message answers the previous turn's function calls (one response per
    call, matched by id and name) or, after fenced code, is user text; the
    figures it carries follow as inline images. Consecutive entries of one
    role are merged into one ``Content``.
    """
    writer = _ContentsWriter(mode, max_file_bytes)
    walk(conversation, writer)
    return writer.contents


class _ContentsWriter:
    def __init__(self, mode: Mode, max_file_bytes: int) -> None:
        self.mode = mode
        self.max_file_bytes = max_file_bytes
        self.contents: list[types.Content] = []

    def add(self, role: str, parts: list[types.Part]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1].role == role:
            self.contents[-1].parts = list(self.contents[-1].parts or []) + parts
        else:
            self.contents.append(types.Content(role=role, parts=parts))

    def model_turn(self, message: ModelMessage) -> list[types.FunctionCall]:
        content = model_content(message)
        self.add("model", list(content.parts or []))
        return [p.function_call for p in content.parts or [] if p.function_call]

    def answer_calls(self, calls: Sequence[types.FunctionCall], execution: ExecutionMessage | None) -> None:
        self.add("user", function_responses(calls, execution) + image_parts(execution))

    def execution_text(self, execution: ExecutionMessage) -> None:
        self.add("user", [types.Part(text=execution.feedback), *image_parts(execution)])

    def user(self, message: UserMessage, new_files: list[InputFile]) -> None:
        self.add("user", user_parts(message, new_files, mode=self.mode, max_file_bytes=self.max_file_bytes))


def model_content(message: ModelMessage) -> types.Content:
    """Gemini's own content for a model turn: from ``raw`` when it holds one
    (sent back exactly), otherwise rebuilt from text and tool-call blocks
    (turns from another model, or replayed without raw)."""
    raw = own_raw(message, "gemini")
    if raw is not None:
        try:
            return types.Content.model_validate(raw["content"])
        except (KeyError, pydantic.ValidationError) as exc:
            raise ModelError(f"a model turn's raw Gemini content is invalid: {exc}") from None
    text = message.turn.text
    parts = [types.Part(text=text)] if text else []
    for block in tool_calls_of(message):
        parts.append(
            types.Part(
                function_call=types.FunctionCall(id=block.call_id, name=RUN_PYTHON.name, args={"code": block.code})
            )
        )
    if not parts:
        parts = [types.Part(text="(no answer)")]
    return types.Content(role="model", parts=parts)


def function_responses(calls: Sequence[types.FunctionCall], execution: ExecutionMessage | None) -> list[types.Part]:
    """One response per call: the first carries the result (output, or error
    with the outcome), the others point to it."""
    parts = []
    for i, call in enumerate(calls):
        text = answer_text(i, execution)
        if execution is None:
            response = {"error": "this call was not run"}
        elif not is_run_python(call.name or ""):
            response = {"error": f"there is no tool named {call.name!r}; use run_python(code)"}
        elif i == 0 and not execution.result.ok:
            response = {"error": text, "outcome": execution.result.outcome.value}
        else:
            response = {"output": text}
            if i == 0:
                response["outcome"] = execution.result.outcome.value
        parts.append(
            types.Part(function_response=types.FunctionResponse(id=call.id, name=call.name, response=response))
        )
    return parts


def image_parts(message: UserMessage | ExecutionMessage | None) -> list[types.Part]:
    """A message's images (input images, figures) as inline data."""
    return [
        types.Part(inline_data=types.Blob(mime_type=image.mime_type, data=image.data))
        for image in (message.images if message else [])
    ]


def user_parts(
    message: UserMessage, new_files: Sequence[InputFile], *, mode: Mode, max_file_bytes: int
) -> list[types.Part]:
    """Client mode: the text, a note naming the files (the executor has
    them) and the images the loop attached. Server mode: every new file
    inline, since the code runs on Google's side."""
    parts = [types.Part(text=message.text)] if message.text else []
    if mode == "server":
        for f in new_files:
            parts += inline_file_parts(f, max_file_bytes=max_file_bytes)
        return parts
    if new_files:
        parts.append(types.Part(text=files_note(new_files)))
    return parts + image_parts(message)


def inline_file_parts(file: InputFile, *, max_file_bytes: int) -> list[types.Part]:
    """A file for Gemini's server-side code execution: a caption and the
    bytes inline. PNG and JPEG go as images; the rest must be text (CSV,
    XML, source code...)."""
    if len(file.data) > max_file_bytes:
        raise ModelError(
            f"input file {file.name!r} is {len(file.data)} bytes, over the server-mode limit of "
            f"{max_file_bytes} bytes (raise GeminiModel(max_file_bytes=...) or use client mode)"
        )
    caption = types.Part(text=f"File {file.name}:")
    image = image_mime(file.name)
    if image is not None:
        return [caption, types.Part(inline_data=types.Blob(mime_type=image, data=file.data))]
    try:
        file.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(
            f"input file {file.name!r} is not text nor a PNG, JPEG or WebP image: server mode sends "
            "text files and images only (use client mode for other binary files)"
        ) from None
    mime = INLINE_TEXT_TYPES.get(PurePath(file.name).suffix.lower(), "text/plain")
    return [caption, types.Part(inline_data=types.Blob(mime_type=mime, data=file.data))]


# -- errors ---------------------------------------------------------------------


def classify_error(
    exc: BaseException, *, provider: str, key: ApiKey | None, timeout_s: float | None
) -> ModelError | None:
    """A google-genai exception as a ModelError (None: not an SDK error, a bug
    to surface as is). Messages never contain the key."""
    if isinstance(exc, MalformedFunctionCall):
        return ModelError(
            f"{provider} wrote a malformed function call{': ' + str(exc) if str(exc) else ''}", retryable=True
        )
    if isinstance(exc, genai_errors.APIError):
        code = exc.code or 0
        return _errors.status_error(
            provider,
            code,
            f"{exc.status or ''} {exc.message or exc}".strip(),
            key=key,
            key_help=KEY_HELP,
            auth=code == 400 and _is_key_rejection(exc),
            retry_after_s=_retry_after(exc),
        )
    if isinstance(exc, httpx2.TimeoutException):
        return _errors.timeout_error(provider, timeout_s)
    if isinstance(exc, httpx2.TransportError):
        return _errors.connection_error(provider, exc, key)
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
        # The SDK raises these while decoding a body that is not a valid response.
        return _errors.unreadable_error(provider, exc, key)
    return None


def _is_key_rejection(exc: genai_errors.APIError) -> bool:
    text = f"{exc.message} {exc.details}"
    return "API_KEY_INVALID" in text or "API key not valid" in text or "API key expired" in text


def _retry_after(exc: genai_errors.APIError) -> float | None:
    """The Retry-After header, else the RetryInfo detail Gemini puts the wait in: {"retryDelay": "27s"}."""
    header = _errors.retry_after_seconds(getattr(exc.response, "headers", None))
    if header is not None:
        return header
    details = (exc.details or {}).get("error", {}).get("details", []) if isinstance(exc.details, dict) else []
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                pass
    return None
