"""codeloop executors: run model-written code and report what happened."""

from .base import (
    Artifact,
    BaseExecutor,
    ExecutionResult,
    Executor,
    InputFile,
    Isolation,
    Limits,
    Outcome,
    as_input_files,
)
from .local import LocalExecutor
from .registry import DEFAULT_EXECUTOR, UnknownExecutorError, available_executors, get_executor

__all__ = [
    "DEFAULT_EXECUTOR",
    "Artifact",
    "BaseExecutor",
    "ExecutionResult",
    "Executor",
    "InputFile",
    "Isolation",
    "Limits",
    "LocalExecutor",
    "Outcome",
    "UnknownExecutorError",
    "as_input_files",
    "available_executors",
    "get_executor",
]
