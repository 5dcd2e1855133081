"""Models by spec string: ``PREFIX:ARGUMENT``.

Built in: ``replay:CASSETTE.jsonl``, ``scripted:SCRIPT.json``; providers add
theirs to :data:`MODEL_FACTORIES`; third parties register a factory taking the
argument string under the ``codeloop.models`` entry point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

from ..config import GenerationOptions
from .base import Model


def _replay(arg: str, options: "GenerationOptions") -> Model:
    from .replay import ReplayModel

    return ReplayModel(arg)


def _scripted(arg: str, options: "GenerationOptions") -> Model:
    from .scripted import ScriptedModel

    return ScriptedModel.from_file(arg)


def _gemini(arg: str, options: "GenerationOptions") -> Model:
    from .gemini import GeminiModel

    return GeminiModel(arg, mode="client", temperature=options.temperature, max_tokens=options.max_tokens)


def _gemini_server(arg: str, options: "GenerationOptions") -> Model:
    from .gemini import GeminiModel

    return GeminiModel(arg, mode="server", temperature=options.temperature, max_tokens=options.max_tokens)


def _openai(arg: str, options: "GenerationOptions") -> Model:
    from .openai_compat import OpenAIModel, parse_spec

    model, base_url = parse_spec(arg)
    return OpenAIModel(model, base_url, temperature=options.temperature, max_tokens=options.max_tokens)


def _local(arg: str, options: "GenerationOptions") -> Model:
    from .local import LocalModel, LocalSettings

    changes = {k: v for k, v in (("temperature", options.temperature), ("max_tokens", options.max_tokens))
               if v is not None}
    return LocalModel(arg, LocalSettings(**changes))


# Built-in factories take the argument and the generation options.
MODEL_FACTORIES: dict[str, Callable[[str, "GenerationOptions"], Model]] = {
    "replay": _replay,
    "scripted": _scripted,
    "gemini": _gemini,
    "gemini-server": _gemini_server,
    "openai": _openai,
    "local": _local,
}

EXAMPLES = {
    "replay": "replay:examples/cassette.jsonl",
    "scripted": "scripted:script.json",
    "gemini": "gemini:gemini-2.5-flash",
    "gemini-server": "gemini-server:gemini-2.5-flash",
    "openai": "openai:qwen2.5-coder@http://127.0.0.1:11434/v1",
    "local": "local:qwen2.5-coder-1.5b or local:/path/to/model.gguf",
}

DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"


class UnknownModelError(ValueError):
    pass


def available_models() -> list[str]:
    return sorted(set(MODEL_FACTORIES) | {ep.name for ep in entry_points(group="codeloop.models")})


def get_model(spec: str, options: GenerationOptions | None = None) -> Model:
    """The model for ``spec``, with ``options`` applied where the provider has them."""
    prefix, sep, arg = spec.partition(":")
    builtin = MODEL_FACTORIES.get(prefix)
    factory = None
    if builtin is None:
        plugin = [ep for ep in entry_points(group="codeloop.models") if ep.name == prefix]
        factory = plugin[0].load() if plugin else None
    if builtin is None and factory is None:
        choices = ", ".join(f"{name}:…" for name in available_models())
        raise UnknownModelError(f"unknown model {spec!r}; model strings start with one of: {choices}")
    if not sep or not arg:
        example = EXAMPLES.get(prefix, f"{prefix}:ARGUMENT")
        raise UnknownModelError(f"model {spec!r} needs an argument after the colon, e.g. {example}")
    if builtin is not None:
        return builtin(arg, options or GenerationOptions())
    return factory(arg)


@dataclass(frozen=True)
class DefaultModel:
    """The model used when none is named, and why (for a line on stderr)."""

    spec: str
    reason: str


def default_model(env: Mapping[str, str]) -> DefaultModel:
    """Gemini when a Gemini key is set (the SDK's variables), else OpenAI when
    OPENAI_API_KEY is set (``$OPENAI_MODEL``, at ``$OPENAI_BASE_URL`` if set),
    else the local model, which needs no key."""
    from .gemini import KEY_VARIABLES

    for name in KEY_VARIABLES:
        if env.get(name):
            return DefaultModel(f"gemini:{DEFAULT_GEMINI_MODEL}", f"no --model given; {name} is set")
    if env.get("OPENAI_API_KEY"):
        model = env.get("OPENAI_MODEL") or DEFAULT_OPENAI_MODEL
        return DefaultModel(f"openai:{model}", "no --model given; OPENAI_API_KEY is set")
    keys = "/".join((*sorted(KEY_VARIABLES), "OPENAI_API_KEY"))
    return DefaultModel(f"local:{DEFAULT_LOCAL_MODEL}", f"no --model given and no {keys} set")


def default_model_spec(env: Mapping[str, str]) -> str:
    return default_model(env).spec
