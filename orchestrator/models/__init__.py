"""Models: one module per provider, all behind the :class:`Model` protocol."""

from .base import Model, ModelAuthError, ModelError, RateLimitError, StreamingModel
from .registry import (
    DefaultModel,
    ModelRegistry,
    UnknownModelError,
    available_models,
    default_model,
    default_model_spec,
    get_model,
)
from .replay import RecordingModel, ReplayModel
from .scripted import ScriptedModel

__all__ = [
    "DefaultModel",
    "Model",
    "ModelAuthError",
    "ModelError",
    "ModelRegistry",
    "RateLimitError",
    "RecordingModel",
    "ReplayModel",
    "ScriptedModel",
    "StreamingModel",
    "UnknownModelError",
    "available_models",
    "default_model",
    "default_model_spec",
    "get_model",
]
