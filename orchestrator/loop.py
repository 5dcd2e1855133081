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
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from executors.base import ExecutionResult, Executor, InputFile, Limits, Outcome, as_input_files
from executors.modules import executor_libraries

from . import events as ev
from .budget import conversation_tokens, fit
from .extract import extract_code, join_blocks, parses
from .toolcalls import find_misnamed_calls
from .logs import get_logger
from .models.base import Model, ModelError, StreamingModel, model_trait
from .policy import RequireCode, ToolMode, code_required, normalized, repeated_failure
from .profiles import profile_for
from .prompts import Prompts
from .types import RUN_PYTHON, Attempt, CodeBlock, Conversation, Message, ModelTurn, RunResult, RunStatus, ToolSpec, Usage

# finish_reason values that mean the reply hit the output limit (OpenAI, llama.cpp; Gemini).
CUT_OFF = frozenset({"length", "MAX_TOKENS", "FinishReason.MAX_TOKENS"})
# Room kept for the reply when the model does not say its output limit.
DEFAULT_OUTPUT_TOKENS = 1024


@dataclass
class _RunState:
    """What one run has done so far; the orchestrator itself holds none of it."""

    inputs: list[InputFile]
    needs_code: bool
    fenced: bool  # code comes as fenced blocks (or calls written as text), not tool calls
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model_time: float = 0.0
    execution_time: float = 0.0
    failures: int = 0
    steps: int = 0
    repeats: int = 0
    code_requested: bool = False
    summary_requested: bool = False
    verify_requested: bool = False
    accepting_code: bool = True
    summary: str = ""
    error: str | None = None
    peak_request_tokens: int = 0
    last_elapsed: float = 0.0  # of the latest model request

    def status(self) -> RunStatus:
        if self.error is not None:
            return RunStatus.FAILED
        if not self.attempts:
            return RunStatus.UNVERIFIED if self.needs_code else RunStatus.ANSWERED_WITHOUT_CODE
        return RunStatus.SOLVED if self.attempts[-1].ok else RunStatus.FAILED


class Orchestrator:
    """Runs prompts through ``model`` and ``executor``.

    Settings are passed in here and nowhere else; the orchestrator holds no
    per-run state, so one instance can serve many concurrent runs.

    ``tools``: ``"on"`` offers the ``run_python`` tool, ``"off"`` asks for
    fenced code, ``"auto"`` offers the tool unless the model is known to write
    its calls as text, and falls back to fenced code for the rest of a run
    once a turn does. ``require_code``: when a prompt needs computing
    (``"auto"``: it has files or asks to compute, count or plot; or
    ``"always"``) and the model answers without running code, it is asked
    once for code; a run that still ran none ends ``unverified``.
    ``context_tokens``: the model's context window (default: the model's
    ``context_length`` if it has one); older outputs are shortened to fit.
    ``libraries``: the modules the system prompt names (default: those the
    executor's interpreter can import, probed once; see executors.modules).
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
        tools: ToolMode = "auto",
        require_code: RequireCode = "auto",
        context_tokens: int | None = None,
        libraries: Sequence[str] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if tools not in ("auto", "on", "off"):
            raise ValueError(f"tools must be 'auto', 'on' or 'off', got {tools!r}")
        code_required(require_code, "")  # validates the value
        self.model = model
        self.executor = executor
        self.max_retries = max_retries
        self.max_steps = max_steps
        self.limits = limits or getattr(executor, "limits", None) or Limits()
        self.profile = profile_for(model_trait(model, "profile_name") or self._model_name)
        self.prompts = prompts or self.profile.prompts()
        if libraries is None and prompts is None:  # a caller's own Prompts keep their list
            libraries = executor_libraries(executor)
        if libraries is not None:
            self.prompts = self.prompts.replace(libraries=tuple(libraries))
        self.stream_text = stream_text
        self.tools = tools
        self.require_code = require_code
        self.context_tokens = context_tokens or model_trait(model, "context_length")

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

    def _starts_fenced(self) -> bool:
        if self.tools != "auto":
            return self.tools == "off"
        known = model_trait(self.model, "native_tool_calls")
        if known is None:
            known = self.profile.native_tool_calls
        return known is False

    def _system(self, state: _RunState) -> str:
        stateful = getattr(self.executor, "stateful", False)
        return self.prompts.system(self.limits, state.inputs, stateful=stateful, tools=not state.fenced)

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
        # In a chat, files sent with earlier messages do not make a follow-up need code.
        seen = {(f.name, f.data) for m in conv.messages for f in m.files}
        new_inputs = [f for f in inputs if (f.name, f.data) not in seen]
        state = _RunState(inputs=inputs, needs_code=code_required(self.require_code, prompt, new_inputs),
                          fenced=self._starts_fenced())
        if not conv.system:
            conv.system = self._system(state)
        conv.add(Message(role="user", text=prompt, files=inputs))
        session = session or run_id
        logger = get_logger().bind(run_id=run_id)
        logger.info("run.start", model=self._model_name, executor=self._executor_name, files=len(inputs))
        started = time.perf_counter()

        while True:
            tools: tuple[ToolSpec, ...] = (RUN_PYTHON,) if state.accepting_code and not state.fenced else ()
            yield ev.ModelRequest(run_id, step=state.steps, tools=state.accepting_code)
            turn = None
            async for item in self._ask(conv, tools, state, run_id, logger):
                if isinstance(item, ModelTurn):
                    turn = item
                else:
                    yield item
            if turn is None:
                break  # the model failed; state.error says why

            if turn.executed:
                # The provider ran the code itself (Gemini's server-side tool),
                # retrying on its own; its attempts are ours to record.
                conv.add(Message(role="model", text=turn.text, turn=turn))
                yield ev.ModelResponse(run_id, turn=turn, duration_s=state.last_elapsed)
                for attempt in turn.executed:
                    state.steps += 1
                    attempt.step = state.steps
                    attempt.remote = True
                    state.attempts.append(attempt)
                    state.execution_time += attempt.result.duration_s
                    yield ev.ExecutionFinished(run_id, step=state.steps, attempt=attempt)
                state.summary = turn.text
                break

            # With tools withdrawn (the summary request) nothing the model writes runs.
            blocks = (list(turn.code_blocks) or extract_code(turn.text, (RUN_PYTHON.name,))) if state.accepting_code else []
            conv.add(Message(role="model", text=turn.text, turn=turn, code_blocks=blocks))
            yield ev.ModelResponse(run_id, turn=turn, duration_s=state.last_elapsed)
            if any(b.source == "text_tool_call" for b in blocks) and not state.fenced and self.tools == "auto":
                # The model writes its calls as text: ask for fenced code from now on.
                state.fenced = True
                conv.system = self._system(state)
                logger.info("run.tools_off", reason="the model wrote its tool call as text")
            misnamed = find_misnamed_calls(turn.text, (RUN_PYTHON.name,)) if state.accepting_code and not blocks else []
            if misnamed and state.attempts and state.attempts[-1].ok:
                # The program already ran; what is missing is the answer in words.
                conv.add(Message(role="user", text=self.prompts.summary()))
                state.accepting_code = False
                continue
            if misnamed:
                retry = self._reject_misnamed(conv, misnamed, state, run_id, logger)
                if retry is not None:
                    yield retry
                continue
            if not blocks and self._should_verify(state):
                state.verify_requested = True
                conv.add(Message(role="user", text=self.prompts.verify(prompt)))
                logger.info("run.verify_requested")
                continue
            if not blocks:
                if state.accepting_code and self._should_request_code(state):
                    state.code_requested = True
                    conv.add(Message(role="user", text=self.prompts.request_code(state.inputs)))
                    logger.info("run.code_requested")
                    continue
                state.summary = turn.text
                break
            code = join_blocks(blocks)
            last = state.attempts[-1] if state.attempts else None
            if last is not None and last.ok and normalized(code) == normalized(last.code):
                # The model restated the code that already ran; running it again
                # would only loop. An answer with words beside the code stands;
                # a bare restatement gets one request for the answer in words.
                if _prose(turn.text, blocks) or state.summary_requested:
                    state.summary = turn.text
                    break
                state.summary_requested = True
                conv.add(Message(role="user", text=self.prompts.summary()))
                state.accepting_code = False
                continue

            if turn.finish_reason in CUT_OFF and not parses(code):
                retry = self._reject_truncated(conv, blocks, state, run_id, logger)
                if retry is not None:
                    yield retry
                continue

            repeat = repeated_failure(code, state.attempts)
            if repeat is not None:
                retry = self._reject_repeat(conv, blocks, repeat, state, run_id, logger)
                if retry is not None:
                    yield retry
                continue

            state.steps += 1
            yield ev.CodeExtracted(run_id, step=state.steps, code=code, blocks=blocks)
            yield ev.ExecutionStarted(run_id, step=state.steps, code=code)
            result = await self._execute(code, inputs, session)
            state.execution_time += result.duration_s
            attempt = Attempt(code=code, result=result, step=state.steps)
            state.attempts.append(attempt)
            logger.info(
                "execution.finished",
                step=state.steps,
                outcome=result.outcome.value,
                duration_ms=round(result.duration_s * 1000, 1),
                error_type=result.error_type,
            )
            yield ev.ExecutionFinished(run_id, step=state.steps, attempt=attempt)

            if result.outcome is Outcome.SANDBOX_ERROR:
                # The executor broke, not the code: new code cannot fix a wrong
                # token or a dead sandbox, so the run ends with the error
                # recorded (a batch marks it for --resume) instead of spending
                # the model's retries on it.
                state.error = f"executor failed: {result.error_type or 'SandboxError'}: {result.error_message or ''}".rstrip(": ")
                logger.warning("executor.failed", step=state.steps, error=state.error)
                break

            if result.ok:
                conv.add(Message(role="execution", text=self.prompts.feedback(result, self._retries_left(state)),
                                 result=result, code_blocks=blocks))
                if state.steps >= self.max_steps:
                    conv.add(Message(role="user", text=self.prompts.summary()))
                    state.accepting_code = False
                continue

            retry = self._record_failure(conv, blocks, result, state, run_id, logger)
            if retry is not None:
                yield retry

        result_obj = self._finish(prompt, state, run_id, started, logger)
        if result_obj.summary:
            yield ev.Summary(run_id, text=result_obj.summary)
        yield ev.Done(run_id, result=result_obj)

    async def _ask(self, conv: Conversation, tools: tuple[ToolSpec, ...], state: _RunState, run_id: str, logger
                   ) -> AsyncIterator[ev.Event | ModelTurn]:
        """One model request: text deltas as events, then the turn (nothing
        when the model failed, with ``state.error`` set)."""
        request = conv
        if self.context_tokens:
            budget = self.context_tokens - (model_trait(self.model, "max_tokens") or DEFAULT_OUTPUT_TOKENS)
            request = fit(conv, max(budget, 0))
        state.peak_request_tokens = max(state.peak_request_tokens, conversation_tokens(request))
        t0 = time.perf_counter()
        turn: ModelTurn | None = None
        try:
            if self.stream_text and isinstance(self.model, StreamingModel):
                async for piece in self.model.generate_stream(request, tools):
                    if isinstance(piece, str):
                        yield ev.TextDelta(run_id, text=piece)
                    else:
                        turn = piece
                if turn is None:
                    raise ModelError("the model's stream ended without a complete turn")
            else:
                turn = await self.model.generate(request, tools)
        except ModelError as exc:
            state.model_time += time.perf_counter() - t0
            state.error = f"{type(exc).__name__}: {exc}"
            logger.warning("model.error", step=state.steps, error=state.error, status_code=exc.status_code)
            return
        elapsed = time.perf_counter() - t0
        state.last_elapsed = elapsed
        state.model_time += elapsed
        if turn.usage.requests == 0:
            turn.usage.requests = 1
        state.usage = state.usage + turn.usage
        logger.info("model.response", step=state.steps, duration_ms=round(elapsed * 1000, 1),
                    tokens=turn.usage.total_tokens, finish_reason=turn.finish_reason)
        yield turn

    def _should_request_code(self, state: _RunState) -> bool:
        """Ask once for code when the task needs it and none has run yet."""
        return state.needs_code and not state.code_requested and not state.attempts

    def _should_verify(self, state: _RunState) -> bool:
        """Before the first answer after working code, ask once to check the
        task's requirements against the output (profiles switch it on)."""
        return (self.prompts.verify_request != "" and state.accepting_code and not state.verify_requested
                and state.needs_code and bool(state.attempts) and state.attempts[-1].ok)

    def _retries_left(self, state: _RunState) -> int:
        # A retry is also a step, so the step bound may leave fewer retries
        # than max_retries: the model is told the number it really has.
        return max(min(self.max_retries + 1 - state.failures, self.max_steps - state.steps), 0)

    def _spend_retry(self, conv: Conversation, state: _RunState, feedback: Callable[[int], Message]
                     ) -> int | None:
        """Count a failure and give the model its feedback (built with the
        retries left); with none left, ask for the failure summary instead of
        code. Returns the retries left, or None when they ran out."""
        state.failures += 1
        retries_left = self._retries_left(state)
        conv.add(feedback(retries_left))
        if retries_left > 0:
            return retries_left
        conv.add(Message(role="user", text=self.prompts.failure_summary(state.failures)))
        state.accepting_code = False
        return None

    def _reject_repeat(self, conv, blocks, repeat: Attempt, state: _RunState, run_id: str, logger
                       ) -> ev.Retry | None:
        """A program identical to one that failed is not run again; resending
        it costs a retry like a failure would."""
        state.repeats += 1
        note = ExecutionResult(outcome=Outcome.FAILED, error_type="RepeatedProgram",
                               error_message=f"the same program as attempt {repeat.step}, not run again")
        retries_left = self._spend_retry(conv, state, lambda left: Message(
            role="execution", text=self.prompts.repeated(repeat.step, repeat.result, left), result=note,
            code_blocks=blocks))
        logger.info("run.repeat_rejected", same_as=repeat.step, retries_left=retries_left or 0)
        if retries_left is None:
            return None
        return ev.Retry(run_id, failures=state.failures, retries_left=retries_left,
                        reason=f"repeated the program of attempt {repeat.step}")

    def _reject_misnamed(self, conv, names: list[str], state: _RunState, run_id: str, logger) -> ev.Retry | None:
        """A call to a tool that was never offered runs nothing; the model is
        told how to run code instead, and that costs a retry."""
        state.code_requested = True  # this is the request for code
        retries_left = self._spend_retry(conv, state, lambda left: Message(
            role="user", text=self.prompts.unknown_tools(names, left, tools=not state.fenced)))
        logger.info("run.unknown_tool", names=names, retries_left=retries_left or 0)
        if retries_left is None:
            return None
        return ev.Retry(run_id, failures=state.failures, retries_left=retries_left,
                        reason=f"called a tool that does not exist: {', '.join(names)}")

    def _reject_truncated(self, conv, blocks, state: _RunState, run_id: str, logger) -> ev.Retry | None:
        """A program cut off at the output limit cannot run; running it would
        only report the syntax error of its missing end. It costs a retry."""
        retries_left = self._spend_retry(conv, state, lambda left: Message(
            role="user", text=self.prompts.truncated(left), code_blocks=blocks))
        logger.info("run.truncated_reply", retries_left=retries_left or 0)
        if retries_left is None:
            return None
        return ev.Retry(run_id, failures=state.failures, retries_left=retries_left,
                        reason="the reply was cut off at the output limit")

    def _record_failure(self, conv, blocks, result: ExecutionResult, state: _RunState, run_id: str, logger
                        ) -> ev.Retry | None:
        """Feedback for a failed execution; a Retry event, or None when no
        retries are left and the failure summary was asked for."""
        retries_left = self._spend_retry(conv, state, lambda left: Message(
            role="execution", text=self.prompts.feedback(result, left), result=result, code_blocks=blocks))
        if retries_left is None:
            logger.info("run.retries_exhausted", failures=state.failures)
            return None
        logger.info("run.retry", failures=state.failures, retries_left=retries_left)
        reason = f"{result.outcome.value}: {result.error_type or ''} {result.error_message or ''}".strip()
        return ev.Retry(run_id, failures=state.failures, retries_left=retries_left, reason=reason)

    def _finish(self, prompt: str, state: _RunState, run_id: str, started: float, logger) -> RunResult:
        status = state.status()
        result = RunResult(
            prompt=prompt,
            summary=state.summary.strip(),
            status=status,
            attempts=state.attempts,
            usage=state.usage,
            wall_time_s=time.perf_counter() - started,
            model_time_s=state.model_time,
            execution_time_s=state.execution_time,
            run_id=run_id,
            model=self._model_name,
            executor=self._executor_name,
            error=state.error,
            repeats_rejected=state.repeats,
            code_requested=state.code_requested,
            peak_request_tokens=state.peak_request_tokens,
        )
        logger.info("run.done", status=status.value, attempts=len(state.attempts), tokens=state.usage.total_tokens,
                    duration_ms=round(result.wall_time_s * 1000, 1))
        return result

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


def _prose(text: str, blocks: Sequence[CodeBlock]) -> str:
    """The words of a reply around its code (fences and their code removed)."""
    for block in blocks:
        text = text.replace(block.code, "")
    return re.sub(r"```[\w-]*|~~~", "", text).strip()
