"""Running one batch item, and the local (in-process asyncio) engine.

:class:`ItemRunner` is the unit both engines share: the local engine holds
one for the whole batch, each Ray actor holds its own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from executors.base import Executor, InputFile, as_input_files

from ..config import GenerationOptions, LoopConfig
from ..loop import Orchestrator
from ..models.base import Model
from ..types import RunResult, RunStatus
from .inputs import BatchItem
from .limits import BackoffGate, BoundedExecutor, GatedModel


@dataclass
class ItemOutcome:
    result: RunResult
    rate_limited: int = 0  # 429s this item's model calls met (and waited out)


def is_executor(executor: Any) -> bool:
    """An executor instance, as opposed to a name or a factory (an executor class is a factory)."""
    return hasattr(executor, "execute") and not isinstance(executor, type)


def model_name(model: Any) -> str:
    """The name a batch records for a model given as a spec string or an instance."""
    return str(model if isinstance(model, str) else getattr(model, "name", type(model).__name__))


def executor_name(executor: Any) -> str:
    """The name a batch records for an executor given as a name, an instance or a factory."""
    if isinstance(executor, str):
        return executor
    if is_executor(executor):
        return str(executor.name)
    return str(getattr(executor, "name", None) or getattr(executor, "__qualname__", type(executor).__name__))


def spec_names(model: Any, executor: Any) -> tuple[str, str]:
    return model_name(model), executor_name(executor)


def build_model(model: Model | str, generation: GenerationOptions | None = None) -> Model:
    if isinstance(model, str):
        from ..models.registry import get_model

        return get_model(model, generation)
    return model


def build_executor(executor: Any, options: Mapping[str, Any] | None = None) -> tuple[Executor, bool]:
    """An executor from a name, an instance or a factory; the flag says
    whether the batch owns it (and so closes it)."""
    if isinstance(executor, str):
        from executors.registry import get_executor

        return get_executor(executor, **dict(options or {})), True
    if is_executor(executor):
        return executor, False
    if callable(executor):
        return executor(), True
    raise TypeError(f"executor must be a name, an Executor or a factory, got {type(executor).__name__}")


def failed_result(item: BatchItem, exc: BaseException, *, model: str, executor: str, wall_time_s: float) -> RunResult:
    """A run that broke outside the loop's own error handling (a bug, an
    unreadable input file): recorded as an error so ``--resume`` retries it."""
    return RunResult(
        prompt=item.prompt,
        summary="",
        status=RunStatus.FAILED,
        run_id=item.id,
        model=model,
        executor=executor,
        wall_time_s=wall_time_s,
        error=f"{type(exc).__name__}: {exc}",
    )


class ItemRunner:
    """Runs items through the orchestrator loop with shared model-call slots,
    a shared rate-limit backoff and a bounded executor."""

    def __init__(
        self,
        model: Model,
        executor: Executor,
        *,
        config: LoopConfig,
        concurrency: int,
        execution_concurrency: int,
        gate: BackoffGate,
        max_rate_limit_retries: int = 8,
        on_rate_limit: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.executor = BoundedExecutor(executor, execution_concurrency)
        self.model_slots = asyncio.Semaphore(concurrency)
        self.gate = gate
        self.config = config
        self.max_rate_limit_retries = max_rate_limit_retries
        self.on_rate_limit = on_rate_limit

    async def run(self, item: BatchItem, files: list[InputFile] | None = None) -> ItemOutcome:
        """Run one item; ``files`` are its input files already read (else read here from ``item.files``)."""
        gated = GatedModel(
            self.model,
            gate=self.gate,
            slots=self.model_slots,
            max_rate_limit_retries=self.max_rate_limit_retries,
            on_rate_limit=self.on_rate_limit,
        )
        started = time.perf_counter()
        try:
            files = as_input_files(item.files) if files is None else files
            orchestrator = Orchestrator(gated, self.executor, config=self.config)
            result = await orchestrator.run(item.prompt, files=files, run_id=item.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one broken item must not stop the batch
            result = failed_result(
                item, exc, model=self.model.name, executor=self.executor.name, wall_time_s=time.perf_counter() - started
            )
        return ItemOutcome(result=result, rate_limited=gated.rate_limited)


class Engine(Protocol):
    """Where items run. The driver calls ``run`` from up to ``slots`` tasks at once."""

    name: str
    slots: int

    async def start(self) -> None: ...

    async def run(self, item: BatchItem) -> ItemOutcome: ...

    async def aclose(self) -> None: ...


class LocalEngine:
    """Every item in this process, on this event loop."""

    name = "local"

    def __init__(
        self,
        model: Model | str,
        executor: Any,
        *,
        config: LoopConfig,
        concurrency: int,
        execution_concurrency: int,
        gate: BackoffGate,
        max_rate_limit_retries: int = 8,
        on_rate_limit: Callable[[], None] | None = None,
    ) -> None:
        self._model_spec = model
        self._executor_spec = executor  # a name, an Executor or a factory
        self._config = config
        self._owns_executor = False
        self._executor: Executor | None = None
        # Items in flight: exactly ``concurrency``, as the option says. (It was concurrency +
        # execution_concurrency, so --concurrency 1 kept two items going: a second item's model
        # call overlapped the first one's execution.)
        self.slots = concurrency
        self._make_runner = functools.partial(
            ItemRunner,
            config=config,
            concurrency=concurrency,
            execution_concurrency=execution_concurrency,
            gate=gate,
            max_rate_limit_retries=max_rate_limit_retries,
            on_rate_limit=on_rate_limit,
        )
        self._runner: ItemRunner | None = None
        self._owned_model: Model | None = None

    async def start(self) -> None:
        model = build_model(self._model_spec, self._config.generation)
        if isinstance(self._model_spec, str):
            self._owned_model = model  # built here from its name, so closed here (a local server stops)
        self._executor, self._owns_executor = build_executor(self._executor_spec, self._config.executor_options)
        self._runner = self._make_runner(model, self._executor)

    async def run(self, item: BatchItem) -> ItemOutcome:
        assert self._runner is not None, "start() the engine first"
        return await self._runner.run(item)

    async def aclose(self) -> None:
        if self._executor is not None and self._owns_executor:
            await self._executor.aclose()
        self._executor = None
        model, self._owned_model = self._owned_model, None
        if model is not None and hasattr(model, "aclose"):
            await model.aclose()
