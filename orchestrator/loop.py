"""The generate-execute-refine loop, as Gemini describes its code-execution tool.

The model writes code; it is executed; the result goes back to the model; the
model may write more code, fix failing code, or answer. Each failed execution
costs one retry. After the first attempt plus ``max_retries`` retries have all
failed, the loop stops asking for code and asks for a final summary that says
what failed. Successful steps are bounded by ``max_steps``.

:meth:`Orchestrator.stream` yields typed events; :meth:`Orchestrator.run` is
built on it and returns the :class:`RunResult`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from executors.base import ExecutionResult, Executor, InputFile, Limits, Outcome, as_input_files

from . import events as ev
from .extract import extract_code, join_blocks
from .logs import get_logger
from .models.base import Model, ModelError, StreamingModel
from .prompts import Prompts
from .types import RUN_PYTHON, Attempt, Conversation, Message, ModelTurn, RunResult, RunStatus, ToolSpec, Usage


class Orchestrator:
    """Runs prompts through ``model`` and ``executor``.

    Settings are passed in here and nowhere else; the orchestrator holds no
    per-run state, so one instance can serve many concurrent runs.
    """

    def __init__(
        self,
        model: Model,
        executor: Executor,
        *,
        max_retries: int = 5,
        max_steps: int = 10,
        limits: Limits | None = None,
        prompts: Prompts | None = None,
        stream_text: bool = False,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.model = model
        self.executor = executor
        self.max_retries = max_retries
        self.max_steps = max_steps
        self.limits = limits or getattr(executor, "limits", None) or Limits()
        self.prompts = prompts or Prompts()
        self.stream_text = stream_text

    async def run(
        self,
        prompt: str,
        *,
        files: Sequence[str | Path | InputFile] = (),
        conversation: Conversation | None = None,
        session: str | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        result: RunResult | None = None
        async for event in self.stream(prompt, files=files, conversation=conversation, session=session, run_id=run_id):
            if isinstance(event, ev.Done):
                result = event.result
        assert result is not None  # stream always ends with Done
        return result

    async def stream(
        self,
        prompt: str,
        *,
        files: Sequence[str | Path | InputFile] = (),
        conversation: Conversation | None = None,
        session: str | None = None,
        run_id: str | None = None,
    ) -> AsyncIterator[ev.Event]:
        """Run one prompt, yielding events; the last one is :class:`events.Done`.

        ``conversation`` continues an earlier exchange (chat sessions); it is
        extended in place. ``session`` names executor state (defaults to the
        run id, so stateful executors keep variables across the run's steps).
        """
        run_id = run_id or uuid.uuid4().hex[:12]
        inputs = as_input_files(files)
        conv = conversation if conversation is not None else Conversation()
        if not conv.system:
            conv.system = self.prompts.system(self.limits, inputs, stateful=getattr(self.executor, "stateful", False))
        conv.add(Message(role="user", text=prompt, files=inputs))
        session = session or run_id
        logger = get_logger().bind(run_id=run_id)
        logger.info("run.start", model=self._model_name, executor=self._executor_name, files=len(inputs))

        started = time.perf_counter()
        attempts: list[Attempt] = []
        usage = Usage()
        model_time = execution_time = 0.0
        failures = steps = 0
        tools: tuple[ToolSpec, ...] = (RUN_PYTHON,)
        summary = ""
        error: str | None = None

        while True:
            yield ev.ModelRequest(run_id, step=steps, tools=bool(tools))
            t0 = time.perf_counter()
            turn: ModelTurn | None = None
            try:
                if self.stream_text and isinstance(self.model, StreamingModel):
                    async for piece in self.model.generate_stream(conv, tools):
                        if isinstance(piece, str):
                            yield ev.TextDelta(run_id, text=piece)
                        else:
                            turn = piece
                    if turn is None:
                        raise ModelError("the model's stream ended without a complete turn")
                else:
                    turn = await self.model.generate(conv, tools)
            except ModelError as exc:
                model_time += time.perf_counter() - t0
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("model.error", step=steps, error=error, status_code=exc.status_code)
                break
            elapsed = time.perf_counter() - t0
            model_time += elapsed
            if turn.usage.requests == 0:
                turn.usage.requests = 1
            usage = usage + turn.usage
            logger.info(
                "model.response",
                step=steps,
                duration_ms=round(elapsed * 1000, 1),
                tokens=turn.usage.total_tokens,
                finish_reason=turn.finish_reason,
            )

            if turn.executed:
                # The provider ran the code itself (Gemini's server-side tool),
                # retrying on its own; its attempts are ours to record.
                conv.add(Message(role="model", text=turn.text, turn=turn))
                yield ev.ModelResponse(run_id, turn=turn, duration_s=elapsed)
                for attempt in turn.executed:
                    steps += 1
                    attempt.step = steps
                    attempt.remote = True
                    attempts.append(attempt)
                    execution_time += attempt.result.duration_s
                    yield ev.ExecutionFinished(run_id, step=steps, attempt=attempt)
                summary = turn.text
                break

            # With tools withdrawn (the summary request) nothing the model writes runs.
            blocks = (list(turn.code_blocks) or extract_code(turn.text)) if tools else []
            conv.add(Message(role="model", text=turn.text, turn=turn, code_blocks=blocks))
            yield ev.ModelResponse(run_id, turn=turn, duration_s=elapsed)
            if not blocks:
                summary = turn.text
                break
            code = join_blocks(blocks)
            if attempts and attempts[-1].ok and code.strip() == attempts[-1].code.strip() and turn.text.strip():
                # The model restated the code that already ran as part of its
                # answer; running it again would only loop.
                summary = turn.text
                break

            steps += 1
            yield ev.CodeExtracted(run_id, step=steps, code=code, blocks=blocks)
            yield ev.ExecutionStarted(run_id, step=steps, code=code)
            result = await self._execute(code, inputs, session)
            execution_time += result.duration_s
            attempt = Attempt(code=code, result=result, step=steps)
            attempts.append(attempt)
            logger.info(
                "execution.finished",
                step=steps,
                outcome=result.outcome.value,
                duration_ms=round(result.duration_s * 1000, 1),
                error_type=result.error_type,
            )
            yield ev.ExecutionFinished(run_id, step=steps, attempt=attempt)

            if result.outcome is Outcome.SANDBOX_ERROR:
                # The executor broke, not the code: new code cannot fix a wrong
                # token or a dead sandbox, so the run ends with the error
                # recorded (a batch marks it for --resume) instead of spending
                # the model's retries on it.
                error = f"executor failed: {result.error_type or 'SandboxError'}: {result.error_message or ''}".rstrip(": ")
                logger.warning("executor.failed", step=steps, error=error)
                break

            if result.ok:
                conv.add(Message(role="execution", text=self.prompts.feedback(result, self.max_retries + 1 - failures),
                                 result=result, code_blocks=blocks))
                if steps >= self.max_steps:
                    conv.add(Message(role="user", text=self.prompts.summary()))
                    tools = ()
                continue

            failures += 1
            # A retry is also a step, so the step bound may leave fewer retries
            # than max_retries: the model is told the number it really has.
            retries_left = min(self.max_retries + 1 - failures, self.max_steps - steps)
            conv.add(Message(role="execution", text=self.prompts.feedback(result, max(retries_left, 0)),
                             result=result, code_blocks=blocks))
            if retries_left <= 0:
                logger.info("run.retries_exhausted", failures=failures)
                conv.add(Message(role="user", text=self.prompts.failure_summary(failures)))
                tools = ()
                continue
            reason = f"{result.outcome.value}: {result.error_type or ''} {result.error_message or ''}".strip()
            logger.info("run.retry", failures=failures, retries_left=retries_left)
            yield ev.Retry(run_id, failures=failures, retries_left=retries_left, reason=reason)

        summary = summary.strip()
        if error is not None:
            status = RunStatus.FAILED
        elif not attempts:
            status = RunStatus.ANSWERED_WITHOUT_CODE
        elif attempts[-1].ok:
            status = RunStatus.SOLVED
        else:
            status = RunStatus.FAILED
        if summary:
            yield ev.Summary(run_id, text=summary)
        result_obj = RunResult(
            prompt=prompt,
            summary=summary,
            status=status,
            attempts=attempts,
            usage=usage,
            wall_time_s=time.perf_counter() - started,
            model_time_s=model_time,
            execution_time_s=execution_time,
            run_id=run_id,
            model=self._model_name,
            executor=self._executor_name,
            error=error,
        )
        logger.info(
            "run.done",
            status=status.value,
            attempts=len(attempts),
            tokens=usage.total_tokens,
            duration_ms=round(result_obj.wall_time_s * 1000, 1),
        )
        yield ev.Done(run_id, result=result_obj)

    async def _execute(self, code: str, files: list[InputFile], session: str) -> ExecutionResult:
        """Run code; whatever the executor does, the loop gets a result back."""
        t0 = time.perf_counter()
        try:
            return await self.executor.execute(code, files=files, limits=self.limits, session=session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the executor broke: report it, never crash the run
            get_logger().error("executor.error", error=f"{type(exc).__name__}: {exc}")
            return ExecutionResult(
                outcome=Outcome.SANDBOX_ERROR,
                error_type=type(exc).__name__,
                error_message=str(exc),
                duration_s=time.perf_counter() - t0,
                executor=self._executor_name,
            )

    @property
    def _model_name(self) -> str:
        return getattr(self.model, "name", type(self.model).__name__)

    @property
    def _executor_name(self) -> str:
        return getattr(self.executor, "name", type(self.executor).__name__)
