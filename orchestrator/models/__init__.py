"""Models: one module per provider, all behind the :class:`Model` protocol."""

from .base import Model, ModelAuthError, ModelError, RateLimitError, StreamingModel
from .registry import (
    MODEL_FACTORIES,
    DefaultModel,
    UnknownModelError,
    available_models,
    default_model,
    default_model_spec,
    get_model,
)
from .replay import RecordingModel, ReplayModel
from .scripted import ScriptedModel

__all__ = [
    "MODEL_FACTORIES",
    "DefaultModel",
    "Model",
    "ModelAuthError",
    "ModelError",
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
