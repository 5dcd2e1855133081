"""The built-in model providers' factories, registered as entry points of the
``codeloop.models`` group in pyproject.toml like any plugin's. Each takes the
argument after ``PREFIX:`` and the generation options; ``example`` is shown
when a spec lacks its argument. Providers are imported only when used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import GenerationOptions
from .base import Model

Factory = Callable[[str, GenerationOptions], Model]


def example(spec: str) -> Callable[[Factory], Factory]:
    def mark(factory: Factory) -> Factory:
        factory.example = spec  # type: ignore[attr-defined]  # a function attribute the CLI's help reads
        return factory

    return mark


@example("replay:examples/cassette.jsonl")
def replay(arg: str, options: GenerationOptions) -> Model:
    from .replay import ReplayModel

    return ReplayModel(arg)


@example("scripted:script.json")
def scripted(arg: str, options: GenerationOptions) -> Model:
    from .scripted import ScriptedModel

    return ScriptedModel.from_file(arg)


@example("gemini:gemini-2.5-flash")
def gemini(arg: str, options: GenerationOptions) -> Model:
    from .gemini import GeminiModel

    return GeminiModel(arg, mode="client", temperature=options.temperature, max_tokens=options.max_tokens)


@example("gemini-server:gemini-2.5-flash")
def gemini_server(arg: str, options: GenerationOptions) -> Model:
    from .gemini import GeminiModel

    return GeminiModel(arg, mode="server", temperature=options.temperature, max_tokens=options.max_tokens)


@example("openai:qwen2.5-coder@http://127.0.0.1:11434/v1")
def openai(arg: str, options: GenerationOptions) -> Model:
    from .openai_compat import OpenAIModel, parse_spec

    model, base_url = parse_spec(arg)
    return OpenAIModel(model, base_url, temperature=options.temperature, max_tokens=options.max_tokens)


@example("anthropic:claude-sonnet-4-5")
def anthropic(arg: str, options: GenerationOptions) -> Model:
    from .anthropic import AnthropicModel

    return AnthropicModel(arg, temperature=options.temperature, max_tokens=options.max_tokens)


@example("local:qwen2.5-coder-1.5b or local:/path/to/model.gguf")
def local(arg: str, options: GenerationOptions) -> Model:
    from .local import LocalModel, LocalSettings

    changes: dict[str, Any] = {
        k: v for k, v in (("temperature", options.temperature), ("max_tokens", options.max_tokens)) if v is not None
    }
    return LocalModel(arg, LocalSettings(**changes))
