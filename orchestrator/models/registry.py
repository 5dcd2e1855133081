"""Models by spec string: ``PREFIX:ARGUMENT``.

Built in: ``replay:CASSETTE.jsonl``, ``scripted:SCRIPT.json``; providers add
theirs to :data:`MODEL_FACTORIES`; third parties register a factory taking the
argument string under the ``codeloop.models`` entry point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

from .base import Model


def _replay(arg: str) -> Model:
    from .replay import ReplayModel

    return ReplayModel(arg)


def _scripted(arg: str) -> Model:
    from .scripted import ScriptedModel

    return ScriptedModel.from_file(arg)


def _gemini(arg: str) -> Model:
    from .gemini import GeminiModel

    return GeminiModel(arg, mode="client")


def _gemini_server(arg: str) -> Model:
    from .gemini import GeminiModel

    return GeminiModel(arg, mode="server")


def _openai(arg: str) -> Model:
    from .openai_compat import OpenAIModel, parse_spec

    model, base_url = parse_spec(arg)
    return OpenAIModel(model, base_url)


MODEL_FACTORIES: dict[str, Callable[[str], Model]] = {
    "replay": _replay,
    "scripted": _scripted,
    "gemini": _gemini,
    "gemini-server": _gemini_server,
    "openai": _openai,
}

EXAMPLES = {
    "replay": "replay:examples/cassette.jsonl",
    "scripted": "scripted:script.json",
    "gemini": "gemini:gemini-2.5-flash",
    "gemini-server": "gemini-server:gemini-2.5-flash",
    "openai": "openai:qwen2.5-coder@http://127.0.0.1:11434/v1",
}

DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"


class UnknownModelError(ValueError):
    pass


def available_models() -> list[str]:
    return sorted(set(MODEL_FACTORIES) | {ep.name for ep in entry_points(group="codeloop.models")})


def get_model(spec: str) -> Model:
    prefix, sep, arg = spec.partition(":")
    factory = MODEL_FACTORIES.get(prefix)
    if factory is None:
        plugin = [ep for ep in entry_points(group="codeloop.models") if ep.name == prefix]
        factory = plugin[0].load() if plugin else None
    if factory is None:
        choices = ", ".join(f"{name}:…" for name in available_models())
        raise UnknownModelError(f"unknown model {spec!r}; model strings start with one of: {choices}")
    if not sep or not arg:
        example = EXAMPLES.get(prefix, f"{prefix}:ARGUMENT")
        raise UnknownModelError(f"model {spec!r} needs an argument after the colon, e.g. {example}")
    return factory(arg)


def default_model_spec(env: Mapping[str, str]) -> str | None:
    """The model to use when none is named, or None when nothing is configured:
    Gemini when a Gemini key is set (the SDK's variables)."""
    from .gemini import KEY_VARIABLES

    if any(env.get(name) for name in KEY_VARIABLES):
        return f"gemini:{DEFAULT_GEMINI_MODEL}"
    return None
