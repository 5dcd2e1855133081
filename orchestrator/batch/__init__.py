"""Batch runs over prompt files: validated inputs, a crash-safe SQLite store,
concurrent execution with a shared rate-limit backoff, resume, reports, and
optional scale-out on Ray."""

from .inputs import BatchInputError, BatchItem, InputProblem, coerce_items, load_items
from .limits import BackoffGate, BackoffPolicy, BoundedExecutor, GatedModel, RateLimitExhausted
from .progress import BatchProgress
from .runner import BatchBusyError, run_batch, run_batch_sync, stored_config
from .settings import BatchSettings
from .store import BatchStore, ItemRecord, StoreError

__all__ = [
    "BackoffGate",
    "BackoffPolicy",
    "BatchBusyError",
    "BatchInputError",
    "BatchItem",
    "BatchProgress",
    "BatchSettings",
    "BatchStore",
    "BoundedExecutor",
    "GatedModel",
    "InputProblem",
    "ItemRecord",
    "RateLimitExhausted",
    "StoreError",
    "coerce_items",
    "load_items",
    "run_batch",
    "run_batch_sync",
    "stored_config",
]
