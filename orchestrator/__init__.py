"""codeloop's orchestrator: the generate-execute-refine loop and its API.

import orchestrator
result = orchestrator.run("What is the sum of the first 50 primes?",
                          model="replay:examples/cassette.jsonl")
print(result.summary)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from executors import Executor, InputFile, Limits, get_executor

from . import events
from .config import GenerationOptions, LoopConfig, loop_config
from .images import ImageSettings
from .loop import Orchestrator
from .models import Model, ModelError, ScriptedModel, get_model
from .prompts import Prompts
from .session import Session, SyncSession
from .types import (
    RUN_PYTHON,
    Attempt,
    CodeBlock,
    Conversation,
    ExecutionMessage,
    Message,
    ModelMessage,
    ModelTurn,
    RunResult,
    RunStatus,
    ToolSpec,
    Usage,
    UserMessage,
)

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "RUN_PYTHON",
    "Attempt",
    "CodeBlock",
    "Conversation",
    "ExecutionMessage",
    "GenerationOptions",
    "ImageSettings",
    "Limits",
    "LoopConfig",
    "Message",
    "Model",
    "ModelError",
    "ModelMessage",
    "ModelTurn",
    "Orchestrator",
    "Prompts",
    "RunResult",
    "RunStatus",
    "ScriptedModel",
    "Session",
    "SyncSession",
    "ToolSpec",
    "Usage",
    "UserMessage",
    "arun",
    "events",
    "run",
    "run_batch",
    "run_batch_sync",
]


def __getattr__(name: str) -> Any:
    # The batch machinery (sqlite3, rich) is imported on first use, not by `import orchestrator`.
    if name in ("run_batch", "run_batch_sync"):
        from . import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def arun(
    prompt: str,
    *,
    model: Model | str,
    executor: Executor | str | None = None,
    files: Sequence[str | Path | InputFile] = (),
    config: LoopConfig | None = None,
    **settings: Any,
) -> RunResult:
    """Run one prompt. ``model`` and ``executor`` may be objects or names
    (``"replay:cassette.jsonl"``, ``"sandbox"``; default: the config's
    executor, the isolated one); an executor built here is closed here.
    ``config`` and ``settings`` (its fields by keyword) go to :class:`Orchestrator`."""
    loop = loop_config(config, settings)
    model_obj = get_model(model, loop.generation) if isinstance(model, str) else model
    owned = executor is None or isinstance(executor, str)
    executor_obj = (
        get_executor(executor or loop.executor, **dict(loop.executor_options))
        if executor is None or isinstance(executor, str)
        else executor
    )
    try:
        return await Orchestrator(model_obj, executor_obj, config=loop).run(prompt, files=files)
    finally:
        if owned:
            await executor_obj.aclose()


def _blocking(async_fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The synchronous form of ``async_fn`` (same parameters, shown by ``help``), via ``asyncio.run``."""

    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(async_fn(*args, **kwargs))

    functools.update_wrapper(blocking, async_fn)
    blocking.__name__ = blocking.__qualname__ = async_fn.__name__.removeprefix("a")
    blocking.__doc__ = f"Synchronous :func:`{async_fn.__name__}`, for scripts and notebooks without a running loop."
    return blocking


run = _blocking(arun)
