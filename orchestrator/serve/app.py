"""The Starlette app: the routes of the Gemini API that the google-genai SDK calls.

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent   (?alt=sse: server-sent events)
    POST /v1beta/models/{model}:countTokens
    GET  /v1beta/models
    GET  /v1beta/models/{model}

``{model}`` is a backend's alias. ``v1`` and ``v1alpha`` are served alike.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..budget import conversation_tokens
from ..logs import get_logger
from ..types import Conversation, UserMessage
from .errors import ApiError
from .guard import RunSlots, check_key, read_json
from .runs import Chunk, bounded, chat_prompt, run_chat, run_loop
from .settings import Backend, ServeSettings, backends_by_alias
from .streaming import StreamedAnswer, collect, encoded
from .wire_in import GenerateRequest, parse_count_tokens, parse_generate

METHODS = ("generateContent", "streamGenerateContent", "countTokens")
VERSIONS = ("v1beta", "v1", "v1alpha")


class GeminiApi:
    """The handlers, over one table of backends and one set of limits."""

    def __init__(self, backends: list[Backend], settings: ServeSettings) -> None:
        self.backends = backends_by_alias(backends)
        self.settings = settings
        self.slots = RunSlots(settings.max_concurrent_runs, settings.retry_after_s)

    # -- routes ------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        self._check_version(request)
        check_key(request, self.settings)
        return JSONResponse({"models": [model_json(b) for b in self.backends.values()]})

    async def get_model(self, request: Request) -> Response:
        self._check_version(request)
        check_key(request, self.settings)
        return JSONResponse(model_json(self._backend(request.path_params["name"])))

    async def model_method(self, request: Request) -> Response:
        self._check_version(request)
        check_key(request, self.settings)
        name, _, method = request.path_params["name"].rpartition(":")
        if method not in METHODS:
            raise ApiError(404, f"no method {method!r} on models/{name}; this server has {', '.join(METHODS)}")
        backend = self._backend(name)
        body = await read_json(request, self.settings.max_body_bytes)
        if method == "countTokens":
            return JSONResponse({"totalTokens": count_tokens(parse_count_tokens(body))})
        generate = parse_generate(body)
        if not generate.code_execution:
            chat_prompt(generate)  # a file a plain chat cannot take is a 400 now, before any slot is used
        if method == "generateContent":
            return await self._answer(backend, generate)
        return await self._stream(backend, generate, sse=request.query_params.get("alt") == "sse")

    # -- running -----------------------------------------------------------------

    def _chunks(
        self, backend: Backend, request: GenerateRequest, run_id: str, stream: bool
    ) -> AsyncGenerator[Chunk, None]:
        source = (
            run_loop(backend, request, run_id=run_id)
            if request.code_execution
            else run_chat(backend, request, stream=stream)
        )
        return bounded(source, timeout_s=self.settings.run_timeout_s, what=f"the run on {backend.alias!r}")

    async def _answer(self, backend: Backend, request: GenerateRequest) -> Response:
        self.slots.take()
        run_id = uuid.uuid4().hex[:12]
        try:
            body = await collect(
                self._chunks(backend, request, run_id, stream=False), model=backend.alias, response_id=run_id
            )
        finally:
            self.slots.give_back()
        return JSONResponse(body)

    async def _stream(self, backend: Backend, request: GenerateRequest, *, sse: bool) -> Response:
        """The first chunk is awaited before answering, so a request that fails
        at once still gets its status code (502, 504) instead of a 200."""
        self.slots.take()
        run_id = uuid.uuid4().hex[:12]
        chunks = self._chunks(backend, request, run_id, stream=True)
        try:
            first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            self.slots.give_back()
            raise
        content = encoded(first, chunks, model=backend.alias, response_id=run_id, sse=sse)
        return StreamedAnswer(content, release=self.slots.give_back, sse=sse)

    # -- helpers -----------------------------------------------------------------

    def _backend(self, name: str) -> Backend:
        alias = name.removeprefix("models/")
        backend = self.backends.get(alias)
        if backend is None:
            raise ApiError(
                404,
                f"models/{alias} is not served here; this server has {', '.join('models/' + a for a in self.backends)}",
            )
        return backend

    @staticmethod
    def _check_version(request: Request) -> None:
        if request.path_params["version"] not in VERSIONS:
            raise ApiError(404, f"API version {request.path_params['version']!r} is not served; use v1beta")


def model_json(backend: Backend) -> dict[str, Any]:
    """A ``Model`` resource for a backend."""
    return {
        "name": f"models/{backend.alias}",
        "baseModelId": backend.alias,
        "version": "codeloop",
        "displayName": backend.alias,
        "description": f"{backend.spec}, with code execution by codeloop",
        "supportedGenerationMethods": list(METHODS),
    }


def count_tokens(request: GenerateRequest) -> int:
    """An estimate (codeloop's context budget, about 3 characters a token):
    backends do not share one tokenizer."""
    conversation = Conversation(system=request.system, messages=[*request.history, UserMessage(text=request.prompt)])
    return conversation_tokens(conversation)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Every error as Gemini's JSON error; one log line per request, with the
    path but never the query (which may hold the key)."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except Exception as exc:  # a bug answers 500; the server stays up
            get_logger().exception("serve.error", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
            response = ApiError(500, f"internal error: {type(exc).__name__}").response()
        get_logger().info(
            "serve.request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    return endpoint


async def not_found(request: Request, exc: Exception) -> Response:
    return ApiError(404, f"{request.method} {request.url.path} is not a route of this server").response()


async def not_allowed(request: Request, exc: Exception) -> Response:
    return ApiError(405, f"{request.method} is not allowed on {request.url.path}").response()


def create_app(
    backends: list[Backend], settings: ServeSettings | None = None, *, close_on_exit: bool = False
) -> Starlette:
    """The ASGI app. ``close_on_exit``: close the backends' models and
    executors when the server stops (the CLI built them; tests keep theirs)."""
    api = GeminiApi(backends, settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_on_exit:
            await close_backends(list(api.backends.values()))

    routes = [
        Route("/{version}/models", guarded(api.list_models), methods=["GET"]),
        Route("/{version}/models/{name}", guarded(api.get_model), methods=["GET"]),
        Route("/{version}/models/{name}", guarded(api.model_method), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})
    app.state.api = api
    return app


async def close_backends(backends: list[Backend]) -> None:
    executors = {id(b.executor): b.executor for b in backends}
    for backend in backends:
        aclose = getattr(backend.model, "aclose", None)
        if aclose is not None:
            await aclose()
    for executor in executors.values():
        await executor.aclose()
