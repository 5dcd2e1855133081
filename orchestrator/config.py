"""One frozen description of how a run is set up: :class:`LoopConfig`.

The orchestrator, ``run()``, batches (local and Ray engines), the benchmark
harness and the command line all take this one object, so a setting added
here reaches every one of them, and a batch stores it (JSON) so that a
resumed batch runs exactly as it started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from executors import jsondata
from executors.base import Limits
from executors.registry import DEFAULT_EXECUTOR

from .images import ImageSettings
from .policy import RequireCode, ToolMode, code_required
from .prompts import Prompts


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling settings a user may set for any built-in provider (None: the
    provider's default)."""

    temperature: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be within [0, 2], got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationOptions:
        return jsondata.from_json(cls, data)


@dataclass(frozen=True)
class LoopConfig:
    """What a run does, as opposed to how fast or where it is scheduled.

    ``max_retries``: failed executions fed back before the failure summary.
    ``max_steps``: bound on executions per run. ``limits``: per execution
    (None: the executor's own). ``prompts``: the loop's texts (None: the
    model's profile). ``tools``: ``"on"`` offers the ``run_python`` tool,
    ``"off"`` asks for fenced code, ``"auto"`` follows the model.
    ``require_code``: ask once for code when a task needs computing
    (``"auto"``: it has files or asks to compute; ``"always"``; ``"never"``).
    ``context_tokens``: the model's context window (None: the model's own).
    ``executor``/``executor_options``: where code runs when the executor is
    given by name (the default is the isolated one). ``generation``: sampling
    options for models built from a spec string. ``images``: which pictures a
    model that takes images sees (input images, the figures its code drew).
    """

    max_retries: int = 5
    max_steps: int = 10
    limits: Limits | None = None
    prompts: Prompts | None = None
    tools: ToolMode = "auto"
    require_code: RequireCode = "auto"
    context_tokens: int | None = None
    executor: str = DEFAULT_EXECUTOR
    executor_options: Mapping[str, Any] = field(default_factory=dict)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    images: ImageSettings = field(default_factory=ImageSettings)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.tools not in ("auto", "on", "off"):
            raise ValueError(f"tools must be 'auto', 'on' or 'off', got {self.tools!r}")
        code_required(self.require_code, "")  # validates the value
        if self.context_tokens is not None and self.context_tokens < 1:
            raise ValueError(f"context_tokens must be positive, got {self.context_tokens}")
        if not isinstance(self.executor, str) or not self.executor:
            raise ValueError(f"executor must be an executor's name, got {self.executor!r}")
        for name, kind in (
            ("limits", Limits),
            ("prompts", Prompts),
            ("generation", GenerationOptions),
            ("images", ImageSettings),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        # Frozen all the way down: a read-only copy of the options.
        object.__setattr__(self, "executor_options", MappingProxyType(dict(self.executor_options)))

    def replace(self, **changes: Any) -> LoopConfig:
        return self.with_settings(changes)

    def with_settings(self, settings: Mapping[str, Any]) -> LoopConfig:
        """This config with ``settings`` (LoopConfig field names) changed; an
        unknown name is an error that lists the known ones."""
        unknown = sorted(set(settings) - FIELD_NAMES)
        if unknown:
            raise TypeError(
                f"unknown loop setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"LoopConfig has: {', '.join(sorted(FIELD_NAMES))}"
            )
        return replace(self, **settings) if settings else self

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoopConfig:
        return jsondata.from_json(
            cls,
            data,
            limits=Limits.from_json,
            prompts=Prompts.from_json,
            generation=GenerationOptions.from_json,
            images=ImageSettings.from_json,
            executor_options=dict,
        )

    def differences(self, other: LoopConfig) -> list[str]:
        """How this config differs from ``other`` (the stored one), a line per
        field; prompts are named, not printed."""
        out = []
        for name in sorted(FIELD_NAMES):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine == theirs:
                continue
            if name == "prompts":
                out.append("prompts: the stored and the new prompts differ")
            else:
                out.append(f"{name}: stored {_shown(theirs)}, now {_shown(mine)}")
        return out


FIELD_NAMES = frozenset(f.name for f in fields(LoopConfig))


def loop_config(config: LoopConfig | None = None, settings: Mapping[str, Any] | None = None) -> LoopConfig:
    """``config`` (default: the defaults) with keyword ``settings`` applied:
    the shape every entry point accepts (``config=`` or ``max_retries=...``)."""
    return (config or LoopConfig()).with_settings(settings or {})


def _shown(value: Any) -> str:
    return repr(dict(value)) if isinstance(value, Mapping) else repr(value)
