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

import mimetypes
import os
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import httpx2
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from executors.base import Artifact, ExecutionResult, InputFile, Outcome

from ..types import RUN_PYTHON, Attempt, CodeBlock, Conversation, Message, ModelTurn, ToolSpec, Usage
from .base import OTHER_CALL_NOTE, ModelAuthError, ModelError, RateLimitError
from .pricing import GEMINI_PRICES, PriceTable
from .retry import RETRYABLE_STATUSES, CallStats, RetryPolicy, call_with_retries, next_chunk

Mode = Literal["client", "server"]

KEY_VARIABLES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's own order of precedence
BASE_URL_VARIABLE = "GOOGLE_GEMINI_BASE_URL"  # the SDK's variable for another endpoint

SERVER_OUTCOMES = {
    "OUTCOME_OK": Outcome.OK,
    "OUTCOME_FAILED": Outcome.FAILED,
    "OUTCOME_DEADLINE_EXCEEDED": Outcome.DEADLINE_EXCEEDED,
}

EXECUTOR_NAME = "gemini-server"
SERVER_MODE_NOTE = (
    "In this session code runs through your built-in code execution tool; there is no run_python "
    "function to call."
)


class MalformedFunctionCall(Exception):
    """Gemini ended with MALFORMED_FUNCTION_CALL and nothing else: the model
    wrote a call the API could not parse. Asking again usually works."""


def find_api_key(api_key: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The key and where it came from (for messages: never the key itself)."""
    if api_key:
        return api_key, "the api_key argument"
    for name in KEY_VARIABLES:
        if env.get(name):
            return env[name], name
    raise ModelAuthError(
        "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) or pass api_key=...; "
        "get one at https://aistudio.google.com/apikey"
    )


class GeminiModel:
    """A :class:`~orchestrator.models.base.StreamingModel` for Gemini.

    ``retry`` sets attempts, backoff and the per-request timeout;
    ``prices`` estimates cost (None for no estimate); ``max_file_bytes``
    bounds each input file sent inline in server mode.
    """

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
        key, self.key_source = find_api_key(api_key, env)
        self._secret = key
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
            api_key=key,
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
                model=self.model, contents=contents, config=config)
            candidate = response.candidates[0] if response.candidates else None
            if (candidate and _enum_name(candidate.finish_reason) == "MALFORMED_FUNCTION_CALL"
                    and not (candidate.content and candidate.content.parts)):
                raise MalformedFunctionCall(candidate.finish_message or "")
            return response

        response, requests = await call_with_retries(
            once, policy=self.retry, classify=self._classify, stats=self.stats, model=self.name, rng=self._rng,
        )
        if not response.candidates:
            raise ModelError(f"Gemini returned no answer ({_block_reason(response)})")
        candidate = response.candidates[0]
        return self._turn(candidate.content, candidate.finish_reason, response.usage_metadata, requests,
                          response.model_version)

    async def generate_stream(
        self, conversation: Conversation, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ModelTurn]:
        """Text deltas as they arrive, then the whole turn. Only opening the
        stream is retried: once text was shown it cannot be taken back."""
        contents, config = self.request(conversation, tools)

        async def open_stream():
            stream = await self._client.aio.models.generate_content_stream(
                model=self.model, contents=contents, config=config)
            iterator = aiter(stream)
            first = await anext(iterator, None)
            if first is None:
                raise ValueError("the stream ended before any event arrived")
            return iterator, first

        (iterator, chunk), requests = await call_with_retries(
            open_stream, policy=self.retry, classify=self._classify, stats=self.stats, model=self.name,
            rng=self._rng,
        )
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
            chunk = await next_chunk(iterator, classify=self._classify, stats=self.stats, what="the Gemini stream")
        if not parts and finish_reason is None:
            raise ModelError("Gemini's stream ended without an answer")
        content = types.Content(role="model", parts=merge_text_parts(parts))
        yield self._turn(content, finish_reason, usage_metadata, requests, model_version)

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    # -- requests ------------------------------------------------------------

    def request(self, conversation: Conversation, tools: Sequence[ToolSpec]
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
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE))
        return contents, config

    # -- responses -----------------------------------------------------------

    def _turn(self, content: types.Content | None, finish_reason: Any, usage_metadata: Any, requests: int,
              model_version: str | None) -> ModelTurn:
        content = content or types.Content(role="model", parts=[])
        usage = usage_from(usage_metadata, requests)
        if self.prices is not None:
            usage.cost_usd = self.prices.cost(self.model, usage)
        turn = parse_content(content)
        turn.usage = usage
        turn.finish_reason = _enum_name(finish_reason)
        turn.model = model_version or self.model
        return turn

    def _classify(self, exc: BaseException) -> ModelError | None:
        return classify_error(exc, provider="Gemini", key_hint=self.key_source, secret=self._secret,
                              timeout_s=self.retry.timeout_s)


# -- conversation -> contents --------------------------------------------------

def function_tool(tools: Sequence[ToolSpec]) -> types.Tool:
    return types.Tool(function_declarations=[
        types.FunctionDeclaration(name=t.name, description=t.description, parameters_json_schema=t.parameters)
        for t in tools
    ])


def to_contents(conversation: Conversation, *, mode: Mode = "client", max_file_bytes: int = 2 * 1024 * 1024
                ) -> list[types.Content]:
    """Translate a conversation into Gemini contents.

    Model turns are replayed from ``raw`` when they have it. An execution
    message answers the previous turn's function calls (one response per
    call, matched by id and name) or, after fenced code, is user text.
    Consecutive entries of one role are merged into one ``Content``.
    """
    contents: list[types.Content] = []
    pending_calls: list[types.FunctionCall] = []
    sent_files: set[tuple[str, bytes]] = set()  # a chat resends its files with each message

    def add(role: str, parts: list[types.Part]) -> None:
        if not parts:
            return
        if contents and contents[-1].role == role:
            contents[-1].parts = list(contents[-1].parts or []) + parts
        else:
            contents.append(types.Content(role=role, parts=parts))

    for index, message in enumerate(conversation.messages):
        if message.role == "model":
            if pending_calls:  # calls the loop never answered: say so, or Gemini rejects the history
                add("user", _unanswered(pending_calls))
            content = model_content(message)
            pending_calls = [p.function_call for p in content.parts or [] if p.function_call]
            add("model", list(content.parts or []))
        elif message.role == "execution":
            if pending_calls:
                add("user", function_responses(pending_calls, message))
                pending_calls = []
            else:
                add("user", [types.Part(text=message.text)])
        elif message.role == "user":
            if pending_calls:
                add("user", _unanswered(pending_calls))
                pending_calls = []
            new_files = [f for f in message.files if (f.name, f.data) not in sent_files]
            sent_files.update((f.name, f.data) for f in message.files)
            fresh = Message(role="user", text=message.text, files=new_files)
            add("user", user_parts(fresh, mode=mode, max_file_bytes=max_file_bytes))
        else:
            raise ValueError(f"conversation message {index} has unknown role {message.role!r}")
    return contents


def model_content(message: Message) -> types.Content:
    """Gemini's own content for a model turn: from ``raw`` when it holds one
    (sent back exactly), otherwise rebuilt from text and tool-call blocks
    (turns from another model, or replayed without raw)."""
    turn = message.turn
    raw = turn.raw if turn else None
    if isinstance(raw, dict) and raw.get("provider") == "gemini":
        try:
            return types.Content.model_validate(raw["content"])
        except (KeyError, pydantic.ValidationError) as exc:
            raise ModelError(f"a model turn's raw Gemini content is invalid: {exc}") from None
    text = turn.text if turn else message.text
    parts = [types.Part(text=text)] if text else []
    for block in (turn.code_blocks if turn else []):
        if block.source == "tool_call":
            parts.append(types.Part(function_call=types.FunctionCall(
                id=block.call_id, name="run_python", args={"code": block.code})))
    if not parts:
        parts = [types.Part(text="(no answer)")]
    return types.Content(role="model", parts=parts)


def function_responses(calls: Sequence[types.FunctionCall], message: Message) -> list[types.Part]:
    """One response per call. The loop runs a turn's code together, so the
    first call carries the result and the others point to it."""
    ok = message.result.ok if message.result else True
    outcome = message.result.outcome.value if message.result else None
    first: dict[str, Any] = {"output": message.text} if ok else {"error": message.text}
    if outcome:
        first["outcome"] = outcome
    parts = []
    for i, call in enumerate(calls):
        if call.name != "run_python":
            response = {"error": f"there is no tool named {call.name!r}; use run_python(code)"}
        else:
            response = first if i == 0 else {"output": OTHER_CALL_NOTE}
        parts.append(types.Part(function_response=types.FunctionResponse(id=call.id, name=call.name,
                                                                         response=response)))
    return parts


def _unanswered(calls: Sequence[types.FunctionCall]) -> list[types.Part]:
    return [types.Part(function_response=types.FunctionResponse(
        id=call.id, name=call.name, response={"error": "this call was not run"})) for call in calls]


def user_parts(message: Message, *, mode: Mode, max_file_bytes: int) -> list[types.Part]:
    parts = [types.Part(text=message.text)] if message.text else []
    if not message.files:
        return parts
    if mode == "client":
        # The executor gets the files; the model only needs to know they exist.
        listing = ", ".join(f"{f.name} ({len(f.data)} bytes)" for f in message.files)
        return parts + [types.Part(text=f"Input files in the working directory: {listing}.")]
    for f in message.files:
        parts += inline_file_parts(f, max_file_bytes=max_file_bytes)
    return parts


def inline_file_parts(file: InputFile, *, max_file_bytes: int) -> list[types.Part]:
    """A file for Gemini's server-side code execution: a caption and the bytes
    inline. Only text files (CSV, plain text, JSON...) are accepted."""
    if len(file.data) > max_file_bytes:
        raise ModelError(
            f"input file {file.name!r} is {len(file.data)} bytes, over the server-mode limit of "
            f"{max_file_bytes} bytes (raise GeminiModel(max_file_bytes=...) or use client mode)"
        )
    mime = mimetypes.guess_type(file.name)[0] or "text/plain"
    if mime in ("application/json", "application/xml"):
        mime = "text/plain"
    try:
        file.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(
            f"input file {file.name!r} is not text: server mode sends CSV and text files only "
            "(use client mode for binary files)"
        ) from None
    if not mime.startswith("text/"):
        mime = "text/plain"
    return [types.Part(text=f"File {file.name}:"),
            types.Part(inline_data=types.Blob(mime_type=mime, data=file.data))]


# -- response -> turn ---------------------------------------------------------

def parse_content(content: types.Content) -> ModelTurn:
    """The text, code blocks, server-side attempts and raw content of a turn."""
    text: list[str] = []
    blocks: list[CodeBlock] = []
    executed: list[Attempt] = []
    pending_code: str | None = None
    figures = 0
    waiting: list[Artifact] = []  # images seen before the result they belong to
    for i, part in enumerate(content.parts or []):
        if part.function_call:
            call = part.function_call
            code = (call.args or {}).get("code")
            if call.name == "run_python" and isinstance(code, str):
                blocks.append(CodeBlock(code=code, source="tool_call", call_id=call.id or f"call-{i}"))
        elif part.executable_code:
            if pending_code is not None:
                executed.append(_remote_attempt(pending_code, None))
            pending_code = part.executable_code.code or ""
            blocks.append(CodeBlock(code=pending_code, source="server"))
        elif part.code_execution_result:
            executed.append(_remote_attempt(pending_code or "", part.code_execution_result))
            executed[-1].result.artifacts += waiting
            waiting = []
            pending_code = None
        elif part.inline_data and (part.inline_data.mime_type or "").startswith("image/"):
            ext = mimetypes.guess_extension(part.inline_data.mime_type) or ".bin"
            figures += 1
            image = Artifact.of(f"figure-{figures}{ext}", part.inline_data.data or b"", part.inline_data.mime_type)
            if executed and pending_code is None:
                executed[-1].result.artifacts.append(image)
            else:
                waiting.append(image)
        elif part.text and not part.thought:
            text.append(part.text)
    if pending_code is not None:
        executed.append(_remote_attempt(pending_code, None))
    if executed and waiting:
        executed[-1].result.artifacts += waiting
    return ModelTurn(
        text="".join(text),
        code_blocks=blocks,
        raw={"provider": "gemini", "content": content.model_dump(mode="json", exclude_none=True)},
        executed=executed,
    )


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)): ?(.*)$")


def _remote_attempt(code: str, result: types.CodeExecutionResult | None) -> Attempt:
    if result is None:
        execution = ExecutionResult(outcome=Outcome.FAILED, error_message="Gemini returned no result for this code",
                                    executor=EXECUTOR_NAME, isolation="remote")
        return Attempt(code=code, result=execution, remote=True)
    outcome = SERVER_OUTCOMES.get(_enum_name(result.outcome) or "", Outcome.FAILED)
    output = result.output or ""
    execution = ExecutionResult(outcome=outcome, executor=EXECUTOR_NAME, isolation="remote")
    if outcome is Outcome.FAILED:
        execution.stderr = output
        last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "")
        match = _ERROR_LINE.match(last.strip())
        execution.error_type = match[1] if match else None
        execution.error_message = match[2] if match else (last.strip() or "the code failed")
        if "Traceback" in output:
            execution.traceback = output
    else:
        execution.stdout = output
        if outcome is Outcome.DEADLINE_EXCEEDED:
            execution.error_message = "the code ran past Gemini's execution time limit"
    return Attempt(code=code, result=execution, remote=True)


def usage_from(meta: Any, requests: int = 1) -> Usage:
    if meta is None:
        return Usage(requests=requests)
    return Usage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=meta.candidates_token_count or 0,
        tool_tokens=meta.tool_use_prompt_token_count or 0,
        thoughts_tokens=meta.thoughts_token_count or 0,
        requests=requests,
    )


def merge_text_parts(parts: Sequence[types.Part]) -> list[types.Part]:
    """Join the text pieces a stream delivers into whole parts. Parts with a
    thought signature or anything besides text are kept exactly as sent."""
    merged: list[types.Part] = []
    for part in parts:
        plain = _plain_text(part)
        if plain and merged and _plain_text(merged[-1]) and bool(merged[-1].thought) == bool(part.thought):
            merged[-1] = merged[-1].model_copy(update={"text": (merged[-1].text or "") + (part.text or "")})
        else:
            merged.append(part)
    return merged


def _plain_text(part: types.Part) -> bool:
    fields = part.model_dump(exclude_none=True)
    return part.text is not None and set(fields) <= {"text", "thought"}


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)


def _block_reason(response: types.GenerateContentResponse) -> str:
    feedback = response.prompt_feedback
    if feedback and feedback.block_reason:
        detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        return f"prompt blocked, {_enum_name(feedback.block_reason)}{detail}"
    return "no candidates in the response"


# -- errors ---------------------------------------------------------------------

def classify_error(exc: BaseException, *, provider: str, key_hint: str, secret: str,
                   timeout_s: float | None) -> ModelError | None:
    """A google-genai exception as a ModelError (None: not an SDK error, a bug
    to surface as is). Messages never contain the key."""
    if isinstance(exc, MalformedFunctionCall):
        return ModelError(f"{provider} wrote a malformed function call{': ' + str(exc) if str(exc) else ''}",
                          retryable=True)
    if isinstance(exc, genai_errors.APIError):
        code = exc.code or 0
        message = redact(f"{exc.status or ''} {exc.message or exc}".strip(), secret)
        if code in (401, 403) or (code == 400 and _is_key_rejection(exc)):
            return ModelAuthError(
                f"{provider} rejected the API key from {key_hint} (HTTP {code}: {message}); "
                f"check GEMINI_API_KEY / GOOGLE_API_KEY", status_code=code)
        if code == 429:
            return RateLimitError(f"{provider} rate limit (HTTP 429: {message})", retry_after_s=_retry_after(exc))
        return ModelError(f"{provider} request failed (HTTP {code}: {message})", status_code=code,
                          retryable=code in RETRYABLE_STATUSES)
    if isinstance(exc, httpx2.TimeoutException):
        return ModelError(f"{provider} request timed out after {timeout_s}s", status_code=408, retryable=True)
    if isinstance(exc, httpx2.TransportError):
        return ModelError(f"could not reach {provider}: {redact(str(exc), secret) or type(exc).__name__}",
                          retryable=True)
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
        # The SDK raises these while decoding a body that is not a valid response.
        return ModelError(f"{provider} sent a response that could not be read: "
                          f"{type(exc).__name__}: {redact(str(exc), secret)[:300]}", retryable=True)
    return None


def _is_key_rejection(exc: genai_errors.APIError) -> bool:
    text = f"{exc.message} {exc.details}"
    return "API_KEY_INVALID" in text or "API key not valid" in text or "API key expired" in text


def _retry_after(exc: genai_errors.APIError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if value:
        try:
            return float(value)
        except ValueError:
            pass
    # Gemini puts the wait in a RetryInfo detail: {"retryDelay": "27s"}.
    details = (exc.details or {}).get("error", {}).get("details", []) if isinstance(exc.details, dict) else []
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                pass
    return None


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text
