"""``--engine ray``: items spread over Ray actors, results back to the driver's store.

Each actor builds its own model (from a spec string, or a copy of a picklable
model object) and its own executor (by name and options, or from a picklable
factory), and runs several items at once on its event loop. The driver keeps
the single store: actors only return results. A small gate actor holds the
cluster-wide rate-limit pause, so a 429 on one machine slows every worker.

Ray is an optional extra: ``pip install 'codeloop[ray]'``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from executors.base import InputFile, as_input_files

from ..config import LoopConfig
from ..types import RunResult
from .engine import ItemOutcome, ItemRunner, build_executor, build_model, failed_result, is_executor, spec_names
from .inputs import BatchItem
from .limits import BackoffGate, BackoffPolicy


class RayUnavailableError(ImportError):
    """``--engine ray`` without Ray installed."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # the extra is not installed
        raise RayUnavailableError("the ray engine needs Ray: pip install 'codeloop[ray]'") from exc
    return ray


class GateState:
    """The cluster-wide pause, kept in one actor. Times are wall-clock
    (``time.time``) because workers on different machines share them."""

    def __init__(self, base_delay_s: float, max_delay_s: float) -> None:
        self._gate = BackoffGate(base_delay_s=base_delay_s, max_delay_s=max_delay_s, clock=time.time)

    def trip(self, retry_after_s: float | None) -> float:
        return time.time() + self._gate.trip(retry_after_s)

    def succeeded(self) -> None:
        self._gate.succeeded()

    def paused_until(self) -> float:
        return self._gate.paused_until


class ClusterGate(BackoffGate):
    """A worker's view of the gate actor: waits ask it how long the pause is;
    trips tell it (without waiting for the answer) and pause locally at once."""

    def __init__(self, actor: Any, *, base_delay_s: float, max_delay_s: float) -> None:
        super().__init__(base_delay_s=base_delay_s, max_delay_s=max_delay_s, clock=time.time)
        self._actor = actor

    def trip(self, retry_after_s: float | None = None) -> float:
        self._actor.trip.remote(retry_after_s)
        return super().trip(retry_after_s)

    def succeeded(self) -> None:
        if self._consecutive:
            self._actor.succeeded.remote()
        super().succeeded()

    async def wait(self) -> None:
        until = await self._actor.paused_until.remote()
        self._paused_until = max(self._paused_until, until)
        await super().wait()


class BatchWorker:
    """One Ray actor: its own model, executor and item runner. The loop's
    config and the backoff policy arrive as their JSON (plain data crosses
    machines whatever Ray's pickling does with classes)."""

    def __init__(
        self,
        model: Any,
        executor: Any,
        config: dict[str, Any],
        backoff: dict[str, Any],
        gate: Any,
        *,
        concurrency: int,
        execution_concurrency: int,
    ) -> None:
        loop_config = LoopConfig.from_json(config)
        policy = BackoffPolicy.from_json(backoff)
        self._executor, self._owns_executor = build_executor(executor, loop_config.executor_options)
        gate_view = ClusterGate(gate, base_delay_s=policy.base_delay_s, max_delay_s=policy.max_delay_s)
        self._runner = ItemRunner(
            build_model(model, loop_config.generation),
            self._executor,
            config=loop_config,
            concurrency=concurrency,
            execution_concurrency=execution_concurrency,
            gate=gate_view,
            max_rate_limit_retries=policy.max_rate_limit_retries,
        )

    async def run(self, item: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
        outcome = await self._runner.run(BatchItem.from_json(item), [InputFile.from_json(f) for f in files])
        return {"result": outcome.result.to_json(), "rate_limited": outcome.rate_limited}

    async def close(self) -> None:
        if self._owns_executor:
            await self._executor.aclose()


class RayEngine:
    name = "ray"

    def __init__(
        self,
        model: Any,
        executor: Any,
        *,
        config: LoopConfig,
        concurrency: int,
        execution_concurrency: int,
        backoff: BackoffPolicy,
        address: str | None = None,
        workers: int | None = None,
    ) -> None:
        _ray()  # fail now, before the store is touched, if Ray is not installed
        if is_executor(executor):
            raise TypeError(
                "the ray engine builds an executor in each worker: pass the executor by name "
                "(with executor_options) or as a picklable factory, not an instance"
            )
        self._model = model
        self._executor = executor
        self._config = config
        self._backoff = backoff
        self._address = address
        self._workers_wanted = workers
        self._concurrency = concurrency
        self._execution_concurrency = execution_concurrency
        self.slots = concurrency  # items in flight across all workers, as in the local engine
        self._actors: list[Any] = []
        self._load: list[int] = []
        self._gate: Any = None
        self._started_ray = False

    async def start(self) -> None:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self._address, include_dashboard=False, log_to_driver=False)
            self._started_ray = True
        count = self._workers_wanted or max(1, int(ray.cluster_resources().get("CPU", 1)))
        count = min(count, self.slots)
        per_actor = {
            "concurrency": math.ceil(self._concurrency / count),
            "execution_concurrency": math.ceil(self._execution_concurrency / count),
        }
        self._gate = ray.remote(num_cpus=0)(GateState).remote(self._backoff.base_delay_s, self._backoff.max_delay_s)
        # num_cpus=0: workers mostly wait on the model, so they need no CPU reservation;
        # SPREAD places them across the cluster's nodes instead of packing one.
        actor_class = ray.remote(num_cpus=0, scheduling_strategy="SPREAD")(BatchWorker)
        model = ray.put(self._model) if not isinstance(self._model, str) else self._model
        self._actors = [
            actor_class.options(max_concurrency=per_actor["concurrency"]).remote(
                model, self._executor, self._config.to_json(), self._backoff.to_json(), self._gate, **per_actor
            )
            for _ in range(count)
        ]
        self._load = [0] * count

    async def run(self, item: BatchItem) -> ItemOutcome:
        index = min(range(len(self._actors)), key=self._load.__getitem__)  # least busy actor
        self._load[index] += 1
        started = time.perf_counter()
        try:
            # Input files are read here, on the driver, so workers on other machines need no shared storage.
            files = [f.to_json() for f in as_input_files(item.files)]
            data = await self._actors[index].run.remote(item.to_json(), files)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an unreadable file or a dead actor: the item is an error, re-run on resume
            model_name, executor_name = spec_names(self._model, self._executor)
            return ItemOutcome(
                failed_result(
                    item, exc, model=model_name, executor=executor_name, wall_time_s=time.perf_counter() - started
                )
            )
        finally:
            self._load[index] -= 1
        return ItemOutcome(RunResult.from_json(data["result"]), rate_limited=data["rate_limited"])

    async def aclose(self) -> None:
        ray = _ray()
        if self._actors:
            await asyncio.gather(*(actor.close.remote() for actor in self._actors), return_exceptions=True)
            for actor in self._actors:
                ray.kill(actor)
        if self._gate is not None:
            ray.kill(self._gate)
        self._actors, self._gate = [], None
        if self._started_ray:
            ray.shutdown()
