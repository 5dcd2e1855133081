"""``local:NAME`` and ``local:/path/model.gguf``: a model file run by a
llama.cpp server that codeloop starts itself and talks to through the
OpenAI-compatible provider.

The server starts on the first request (or :meth:`LocalModel.start`), is shared
with every other LocalModel of the same file and settings in the process, and
stops when the last of them is closed. Sampling defaults to temperature 0 with
a fixed seed so runs are reproducible, and each request asks llama.cpp to reuse
the cached prompt prefix, so a retry only evaluates its new tokens.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..profiles import profile_for
from ..types import Conversation, ModelTurn, ToolSpec
from .base import ModelError
from .llama_server import (
    LlamaServer,
    LlamaServerError,
    LlamaServerSettings,
    LocalServers,
    default_threads,
    process_servers,
)
from .openai_compat import OpenAIModel, ToolMode
from .retry import RetryPolicy

Notify = Callable[[str], None]


@dataclass(frozen=True)
class LocalSettings:
    """What a local model's server and requests use. ``n_ctx`` is split over
    the ``parallel`` slots; ``request_timeout_s`` is None by default because a
    request may wait behind others for a slot, and a dead server is detected
    by its closed connection instead."""

    n_ctx: int = 8192
    threads: int = field(default_factory=default_threads)
    parallel: int = 1
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 1024
    # Qwen2.5-Coder's own generation config uses 1.05; without it, greedy
    # decoding of the 0.5B fell into "(()) (()) ..." until max_tokens on HumanEval.
    repeat_penalty: float = 1.05
    cache_prompt: bool = True
    tools: ToolMode = "auto"
    startup_timeout_s: float = 120.0
    request_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"LocalSettings.temperature must be within [0, 2], got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"LocalSettings.max_tokens must be at least 1, got {self.max_tokens}")
        if not 1.0 <= self.repeat_penalty <= 2.0:
            raise ValueError(f"LocalSettings.repeat_penalty must be within [1, 2], got {self.repeat_penalty}")
        if self.seed < 0:
            raise ValueError(f"LocalSettings.seed must be >= 0, got {self.seed}")
        if self.tools not in ("auto", "on", "off"):
            raise ValueError(f"LocalSettings.tools must be 'auto', 'on' or 'off', got {self.tools!r}")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError(f"LocalSettings.request_timeout_s must be positive, got {self.request_timeout_s}")
        self.server_settings("validate.gguf", "validate")  # the server's own checks, now

    def server_settings(self, model_path: str, alias: str) -> LlamaServerSettings:
        return LlamaServerSettings(
            model_path=model_path,
            alias=alias,
            n_ctx=self.n_ctx,
            threads=self.threads,
            parallel=self.parallel,
            cache_prompt=self.cache_prompt,
            startup_timeout_s=self.startup_timeout_s,
        )

    def request_body(self) -> dict[str, Any]:
        """llama.cpp's own request fields, sent with every request."""
        return {"cache_prompt": self.cache_prompt, "seed": self.seed, "repeat_penalty": self.repeat_penalty}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalSettings:
        return cls(**data)


def is_path_spec(spec: str) -> bool:
    return "/" in spec or spec.endswith(".gguf")


def check_spec(spec: str) -> None:
    """Reject a spec that can never work, before anything starts: a missing
    file, or a name the catalogue does not have (ValueError)."""
    if is_path_spec(spec):
        if not Path(spec).expanduser().is_file():
            raise FileNotFoundError(f"local model file {spec} does not exist")
    elif not spec.startswith("hf:"):
        from .catalogue import lookup

        lookup(spec)


def alias_for(spec: str) -> str:
    """The name the server gives the model: a catalogue name, or the file's stem."""
    return Path(spec).stem if is_path_spec(spec) else spec


class LocalModel:
    """A :class:`~orchestrator.models.base.StreamingModel` backed by a local
    llama.cpp server. ``spec`` is a catalogue name, ``hf:OWNER/REPO/FILE.gguf``
    or a path; names and ``hf:`` files are fetched on first use."""

    takes_images = False  # the catalogue's coder models read text only

    def __init__(
        self,
        spec: str,
        settings: LocalSettings | None = None,
        *,
        servers: LocalServers | None = None,
        env: Mapping[str, str] | None = None,
        notify: Notify | None = None,
    ) -> None:
        if not spec:
            raise ValueError("local model string needs a model: local:NAME or local:/path/to/model.gguf")
        check_spec(spec)
        self.spec = spec
        self.settings = settings or LocalSettings()
        self.name = f"local:{spec}"
        self.context_length = self.settings.n_ctx // self.settings.parallel
        self._servers = process_servers() if servers is None else servers
        self._env = env
        self._notify = notify or (lambda message: None)
        self._lock = asyncio.Lock()
        self.server: LlamaServer | None = None
        self._client: OpenAIModel | None = None

    @property
    def max_tokens(self) -> int:
        return self.settings.max_tokens

    @property
    def native_tool_calls(self) -> bool | None:
        """What the served model was seen to do with tools (None before any turn)."""
        return self._client.native_tool_calls if self._client is not None else None

    def __repr__(self) -> str:
        return f"LocalModel({self.spec!r}, server={self.server!r})"

    async def start(self) -> None:
        """Fetch the model file if needed and start (or join) its server."""
        async with self._lock:
            if self._client is not None:
                return
            path = await self._model_path()
            settings = self.settings.server_settings(str(path), alias_for(self.spec))
            self._notify(
                f"{self.name}: llama.cpp server for {path.name} (context {settings.n_ctx}, "
                f"{settings.threads} threads, {settings.parallel} slots)"
            )
            try:
                self.server = await self._servers.acquire(settings)
            except LlamaServerError as exc:
                raise ModelError(str(exc)) from exc
            self._client = OpenAIModel(
                settings.alias,
                base_url=self.server.base_url,
                env={},
                tools=self.settings.tools,
                temperature=self.settings.temperature,
                max_tokens=self.settings.max_tokens,
                extra_body=self.settings.request_body(),
                stop=profile_for(self.name).stop,
                retry=RetryPolicy(timeout_s=self.settings.request_timeout_s),
            )

    async def _model_path(self) -> Path:
        if is_path_spec(self.spec):
            return Path(self.spec).expanduser().absolute()
        from .files import ModelStore  # only names and hf: files need the store (and may download)

        store = ModelStore.from_env(os.environ if self._env is None else self._env)
        try:
            return await asyncio.to_thread(store.resolve, self.spec, notify=self._notify)
        except Exception as exc:  # a file that cannot be fetched or verified: the model cannot answer
            raise ModelError(f"{self.name}: {exc}") from exc

    async def generate(self, conversation: Conversation, tools: Sequence[ToolSpec] = ()) -> ModelTurn:
        client = await self._started()
        try:
            return await client.generate(conversation, tools)
        except ModelError as exc:
            raise self._server_failure(exc) from exc

    async def generate_stream(
        self, conversation: Conversation, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ModelTurn]:
        client = await self._started()
        try:
            async for item in client.generate_stream(conversation, tools):
                yield item
        except ModelError as exc:
            raise self._server_failure(exc) from exc

    async def _started(self) -> OpenAIModel:
        if self._client is None:
            await self.start()
        assert self._client is not None and self.server is not None  # start() set both
        try:
            self.server.check_alive()  # a dead server fails now, not after the client's retries
        except LlamaServerError as exc:
            raise ModelError(f"{self.name}: {exc}") from exc
        return self._client

    def _server_failure(self, exc: ModelError) -> ModelError:
        """A failed request names the server's death and log when that is the cause."""
        if self.server is None:  # closed meanwhile: nothing to say about it
            return exc
        try:
            self.server.check_alive()
        except LlamaServerError as dead:
            return ModelError(f"{self.name}: {dead}", status_code=exc.status_code)
        return exc

    async def aclose(self) -> None:
        """Close the client and leave the server (stopped when its last user leaves)."""
        async with self._lock:
            client, server, self._client, self.server = self._client, self.server, None, None
            if client is not None:
                await client.aclose()
            if server is not None:
                await self._servers.release(server)
