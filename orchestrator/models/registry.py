"""Models by spec string: ``PREFIX:ARGUMENT``.

Every prefix, built in or a third party's, is an entry point of the
``codeloop.models`` group naming a factory (codeloop's own are listed once,
in its pyproject.toml, and live in :mod:`orchestrator.models.builtin`). A
factory takes the argument string, and the :class:`GenerationOptions` too
when it accepts a second parameter. A :class:`ModelRegistry` is a value:
build one from other entry points (or add factories to a copy) and pass it
where models are looked up; nothing global is changed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from typing import Any

from executors.plugins import PluginTable

from ..config import GenerationOptions
from .base import Model

GROUP = "codeloop.models"


class UnknownModelError(ValueError):
    pass


@dataclass(frozen=True)
class ModelRegistry:
    """Model factories by prefix: entry points, plus factories given directly."""

    table: PluginTable = field(default_factory=lambda: PluginTable.discover(GROUP))
    factories: Mapping[str, Callable[..., Model]] = field(default_factory=dict)

    @classmethod
    def of(cls, entry_points: Iterable[EntryPoint] = (), **factories: Callable[..., Model]) -> ModelRegistry:
        """A registry of exactly these entry points and factories (no installed metadata)."""
        return cls(PluginTable.of(GROUP, entry_points), dict(factories))

    def with_factory(self, prefix: str, factory: Callable[..., Model]) -> ModelRegistry:
        return ModelRegistry(self.table, {**self.factories, prefix: factory})

    def prefixes(self) -> list[str]:
        return sorted(set(self.table.names()) | set(self.factories))

    def factory(self, prefix: str) -> Callable[..., Model] | None:
        if prefix in self.factories:
            return self.factories[prefix]
        return self.table.load(prefix) if prefix in self.table else None

    def get(self, spec: str, options: GenerationOptions | None = None) -> Model:
        """The model for ``spec``, with ``options`` applied where the provider has them."""
        prefix, sep, arg = spec.partition(":")
        factory = self.factory(prefix)
        if factory is None:
            choices = ", ".join(f"{name}:…" for name in self.prefixes())
            raise UnknownModelError(f"unknown model {spec!r}; model strings start with one of: {choices}")
        if not sep or not arg:
            example = getattr(factory, "example", f"{prefix}:ARGUMENT")
            raise UnknownModelError(f"model {spec!r} needs an argument after the colon, e.g. {example}")
        if _takes_options(factory):
            return factory(arg, options or GenerationOptions())
        return factory(arg)


def _takes_options(factory: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: the plugin contract is one argument
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


@functools.cache
def default_registry() -> ModelRegistry:
    """The installed (and checked-out) providers, looked up once per process."""
    return ModelRegistry()


def available_models(registry: ModelRegistry | None = None) -> list[str]:
    return (registry or default_registry()).prefixes()


def get_model(spec: str, options: GenerationOptions | None = None, *, registry: ModelRegistry | None = None) -> Model:
    """The model for ``spec`` from ``registry`` (default: the installed providers)."""
    return (registry or default_registry()).get(spec, options)


DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5"
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class DefaultModel:
    """The model used when none is named, and why (for a line on stderr)."""

    spec: str
    reason: str


def default_model(env: Mapping[str, str]) -> DefaultModel:
    """Gemini when a Gemini key is set (the SDK's variables), else OpenAI when
    OPENAI_API_KEY is set (``$OPENAI_MODEL``, at ``$OPENAI_BASE_URL`` if set),
    else Claude when ANTHROPIC_API_KEY is set (``$ANTHROPIC_MODEL``), else
    the local model, which needs no key."""
    from .gemini import KEY_VARIABLES

    for name in KEY_VARIABLES:
        if env.get(name):
            return DefaultModel(f"gemini:{DEFAULT_GEMINI_MODEL}", f"no --model given; {name} is set")
    if env.get("OPENAI_API_KEY"):
        model = env.get("OPENAI_MODEL") or DEFAULT_OPENAI_MODEL
        return DefaultModel(f"openai:{model}", "no --model given; OPENAI_API_KEY is set")
    if env.get("ANTHROPIC_API_KEY"):
        model = env.get("ANTHROPIC_MODEL") or DEFAULT_ANTHROPIC_MODEL
        return DefaultModel(f"anthropic:{model}", "no --model given; ANTHROPIC_API_KEY is set")
    keys = "/".join((*sorted(KEY_VARIABLES), "OPENAI_API_KEY", "ANTHROPIC_API_KEY"))
    return DefaultModel(f"local:{DEFAULT_LOCAL_MODEL}", f"no --model given and no {keys} set")


def default_model_spec(env: Mapping[str, str]) -> str:
    return default_model(env).spec
