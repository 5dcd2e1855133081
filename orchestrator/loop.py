"""The generate-execute-refine loop, as Gemini describes its code-execution tool.

The model writes code; it is executed; the result goes back to the model; the
model may write more code, fix failing code, or answer. Each failed execution
costs one retry. After the first attempt plus ``max_retries`` retries have all
failed, the loop stops asking for code and asks for a final summary that says
what failed. Successful steps are bounded by ``max_steps``.

What to do after each reply and each execution is decided by the pure
functions of :mod:`orchestrator.policy`; this module carries the decisions out
in small steps: ask the model, run the code, finish.

:meth:`Orchestrator.stream` yields typed events; :meth:`Orchestrator.run` is
built on it and returns the :class:`RunResult`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from executors.base import ExecutionResult, Executor, InputFile, Limits, Outcome, as_input_files
from executors.modules import executor_libraries

from . import events as ev
from .budget import conversation_tokens, fit
from .config import LoopConfig, loop_config
from .extract import extract_code, join_blocks
from .images import ImageSettings, input_images, with_figures
from .logs import get_logger
from .models.base import Model, ModelError, StreamingModel, model_trait
from .policy import Action, Decision, Progress, Reply, Rules, code_required, decide_execution, decide_reply
from .profiles import profile_for
from .run_state import RunState
from .toolcalls import find_misnamed_calls
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
    ToolSpec,
    UserMessage,
)

# finish_reason values that mean the reply hit the output limit (OpenAI, llama.cpp; Gemini).
CUT_OFF = frozenset({"length", "MAX_TOKENS", "FinishReason.MAX_TOKENS"})
# Room kept for the reply when the model does not say its output limit.
DEFAULT_OUTPUT_TOKENS = 1024


class Orchestrator:
    """Runs prompts through ``model`` and ``executor``.

    Settings come as one :class:`~orchestrator.config.LoopConfig` (``config=``)
    or as its fields by keyword (``max_retries=3``), applied over ``config``.
    The orchestrator holds no per-run state, so one instance can serve many
    concurrent runs. ``stream_text`` streams the model's text as
    :class:`events.TextDelta` events (how a run is shown, not what it does).
    A model that takes images (its ``takes_images`` trait) sees input images
    and the figures its code drew, as ``config.images`` says.
    ``libraries``: the modules the system prompt names (default: those the
    executor's interpreter can import, probed once; see executors.modules).
    """

    def __init__(
        self,
        model: Model,
        executor: Executor,
        *,
        config: LoopConfig | None = None,
        stream_text: bool = False,
        libraries: Sequence[str] | None = None,
        **settings: Any,
    ) -> None:
        self.config = loop_config(config, settings)
        self.model = model
        self.executor = executor
        self.stream_text = stream_text
        self.limits = self.config.limits or getattr(executor, "limits", None) or Limits()
        self.profile = profile_for(model_trait(model, "profile_name") or self._model_name)
        self.prompts = self.config.prompts or self.profile.prompts()
        if libraries is None and self.config.prompts is None:  # a caller's own Prompts keep their list
            libraries = executor_libraries(executor)
        if libraries is not None:
            self.prompts = self.prompts.replace(libraries=tuple(libraries))
        self.context_tokens = self.config.context_tokens or model_trait(model, "context_length")
        self.takes_images = bool(model_trait(model, "takes_images", False))
        self.rules = Rules(
            max_retries=self.config.max_retries,
            max_steps=self.config.max_steps,
            verify=self.prompts.verify_request != "",
        )

    @property
    def max_retries(self) -> int:
        return self.config.max_retries

    @property
    def max_steps(self) -> int:
        return self.config.max_steps

    @property
    def tools(self) -> str:
        return self.config.tools

    @property
    def require_code(self) -> str:
        return self.config.require_code

    @property
    def images(self) -> ImageSettings:
        return self.config.images

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
        run = self._start(prompt, files, conversation, session, run_id)
        while not run.done:
            async for event in self._step(run):
                yield event
        result = self._finish(run)
        if result.summary:
            yield ev.Summary(run.run_id, text=result.summary)
        yield ev.Done(run.run_id, result=result)

    # -- the steps of a run ---------------------------------------------------

    def _start(
        self,
        prompt: str,
        files: Sequence[str | Path | InputFile],
        conversation: Conversation | None,
        session: str | None,
        run_id: str | None,
    ) -> RunState:
        run_id = run_id or uuid.uuid4().hex[:12]
        inputs = as_input_files(files)
        conv = conversation if conversation is not None else Conversation()
        # In a chat, files sent with earlier messages do not make a follow-up need code.
        seen = {(f.name, f.data) for m in conv.messages if isinstance(m, UserMessage) for f in m.files}
        new_inputs = [f for f in inputs if (f.name, f.data) not in seen]
        progress = Progress(needs_code=code_required(self.config.require_code, prompt, new_inputs))
        shown = input_images(new_inputs, self.config.images, self.takes_images)  # an image over the cap stops here
        run = RunState(
            run_id=run_id,
            prompt=prompt,
            conv=conv,
            inputs=inputs,
            session=session or run_id,
            logger=get_logger().bind(run_id=run_id),
            progress=progress,
            fenced=self._starts_fenced(),
        )
        if not conv.system:
            conv.system = self._system(run)
        conv.add(UserMessage(text=prompt, files=inputs, images=shown))
        run.logger.info("run.start", model=self._model_name, executor=self._executor_name, files=len(inputs))
        return run

    async def _step(self, run: RunState) -> AsyncIterator[ev.Event]:
        """One model request and what follows from the reply."""
        accepting = run.progress.accepting_code
        yield ev.ModelRequest(run.run_id, step=run.progress.steps, tools=accepting)
        tools: tuple[ToolSpec, ...] = (RUN_PYTHON,) if accepting and not run.fenced else ()
        turn = None
        async for item in self._ask(run, tools):
            if isinstance(item, ModelTurn):
                turn = item
            else:
                yield item
        if turn is None:
            run.done = True  # the model failed; run.error says why
            return
        if turn.executed:
            for event in self._take_remote_attempts(run, turn):
                yield event
            return
        blocks = self._read_reply(run, turn)
        yield ev.ModelResponse(run.run_id, turn=turn, duration_s=run.last_elapsed)
        decision = decide_reply(run.progress, self._reply_facts(run, turn, blocks), self.rules)
        run.progress = decision.progress
        if decision.action is Action.RUN:
            async for event in self._run_code(run, blocks):
                yield event
            return
        retry = self._carry_out(run, decision, turn=turn)
        if retry is not None:
            yield retry

    async def _ask(self, run: RunState, tools: tuple[ToolSpec, ...]) -> AsyncIterator[ev.Event | ModelTurn]:
        """One model request: text deltas as events, then the turn (nothing
        when the model failed, with ``run.error`` set)."""
        request = run.conv
        if self.context_tokens:
            budget = self.context_tokens - (model_trait(self.model, "max_tokens") or DEFAULT_OUTPUT_TOKENS)
            request = fit(run.conv, max(budget, 0))
        run.peak_request_tokens = max(run.peak_request_tokens, conversation_tokens(request))
        t0 = time.perf_counter()
        turn: ModelTurn | None = None
        try:
            if self.stream_text and isinstance(self.model, StreamingModel):
                async for piece in self.model.generate_stream(request, tools):
                    if isinstance(piece, str):
                        yield ev.TextDelta(run.run_id, text=piece)
                    else:
                        turn = piece
                if turn is None:
                    raise ModelError("the model's stream ended without a complete turn")
            else:
                turn = await self.model.generate(request, tools)
        except ModelError as exc:
            run.model_time += time.perf_counter() - t0
            run.error = f"{type(exc).__name__}: {exc}"
            run.logger.warning("model.error", step=run.progress.steps, error=run.error, status_code=exc.status_code)
            return
        yield self._account(run, turn, time.perf_counter() - t0)

    def _account(self, run: RunState, turn: ModelTurn, elapsed: float) -> ModelTurn:
        """Count a reply's time and tokens. A provider that did not count the
        request gets it counted on a copy: the provider's turn is left as it made it."""
        run.last_elapsed = elapsed
        run.model_time += elapsed
        if turn.usage.requests == 0:
            turn = replace(turn, usage=replace(turn.usage, requests=1))
        run.usage = run.usage + turn.usage
        run.logger.info(
            "model.response",
            step=run.progress.steps,
            duration_ms=round(elapsed * 1000, 1),
            tokens=turn.usage.total_tokens,
            finish_reason=turn.finish_reason,
        )
        return turn

    def _take_remote_attempts(self, run: RunState, turn: ModelTurn) -> Iterator[ev.Event]:
        """The provider ran the code itself (Gemini's server-side tool),
        retrying on its own; its attempts are recorded and its text is the answer."""
        run.conv.add(ModelMessage(turn=turn))
        yield ev.ModelResponse(run.run_id, turn=turn, duration_s=run.last_elapsed)
        for executed in turn.executed:
            step = run.progress.steps + 1
            attempt = replace(executed, step=step, remote=True)
            run.progress = replace(run.progress.with_attempt(attempt), steps=step)
            run.execution_time += attempt.result.duration_s
            yield ev.ExecutionFinished(run.run_id, step=step, attempt=attempt)
        run.summary = turn.text
        run.done = True

    def _read_reply(self, run: RunState, turn: ModelTurn) -> list[CodeBlock]:
        """The reply's code blocks (none once code is no longer accepted: nothing
        the model writes then runs), with the reply added to the conversation."""
        blocks: list[CodeBlock] = []
        if run.progress.accepting_code:
            blocks = list(turn.code_blocks) or extract_code(turn.text, (RUN_PYTHON.name,))
        run.conv.add(ModelMessage(turn=turn))
        if any(b.source == "text_tool_call" for b in blocks) and not run.fenced and self.config.tools == "auto":
            # The model writes its calls as text: ask for fenced code from now on.
            run.fenced = True
            run.conv.system = self._system(run)
            run.logger.info("run.tools_off", reason="the model wrote its tool call as text")
        return blocks

    def _reply_facts(self, run: RunState, turn: ModelTurn, blocks: list[CodeBlock]) -> Reply:
        if not blocks:
            misnamed = find_misnamed_calls(turn.text, (RUN_PYTHON.name,)) if run.progress.accepting_code else []
            return Reply(misnamed=tuple(misnamed))
        return Reply(
            code=join_blocks(blocks), prose=bool(_prose(turn.text, blocks)), cut_off=turn.finish_reason in CUT_OFF
        )

    async def _run_code(self, run: RunState, blocks: list[CodeBlock]) -> AsyncIterator[ev.Event]:
        step, code = run.progress.steps, join_blocks(blocks)
        yield ev.CodeExtracted(run.run_id, step=step, code=code, blocks=blocks)
        yield ev.ExecutionStarted(run.run_id, step=step, code=code)
        result = await self._execute(code, run.inputs, run.session)
        run.execution_time += result.duration_s
        attempt = Attempt(code=code, result=result, step=step)
        run.logger.info(
            "execution.finished",
            step=step,
            outcome=result.outcome.value,
            duration_ms=round(result.duration_s * 1000, 1),
            error_type=result.error_type,
        )
        yield ev.ExecutionFinished(run.run_id, step=step, attempt=attempt)
        decision = decide_execution(run.progress.with_attempt(attempt), result, self.rules)
        run.progress = decision.progress
        if result.ok:
            run.conv.add(
                self._with_figures(
                    ExecutionMessage(result=result, feedback=self.prompts.feedback(result, decision.retries_left))
                )
            )
        retry = self._carry_out(run, decision, result=result)
        if retry is not None:
            yield retry

    def _carry_out(
        self, run: RunState, decision: Decision, *, turn: ModelTurn | None = None, result: ExecutionResult | None = None
    ) -> ev.Retry | None:
        """Do what the policy decided (other than running code); a Retry event when one is due."""
        action, conv = decision.action, run.conv
        if action is Action.ANSWER:
            run.summary, run.done = (turn.text if turn else ""), True
        elif action is Action.STOP:
            run.error, run.done = decision.reason, True
            run.logger.warning("executor.failed", step=run.progress.steps, error=run.error)
        elif action is Action.ASK_ANSWER:
            conv.add(UserMessage(text=self.prompts.summary()))
        elif action is Action.REQUEST_VERIFY:
            conv.add(UserMessage(text=self.prompts.verify(run.prompt)))
            run.logger.info("run.verify_requested")
        elif action is Action.REQUEST_CODE:
            conv.add(UserMessage(text=self.prompts.request_code(run.inputs)))
            run.logger.info("run.code_requested")
        elif action in (Action.RETRY, Action.GIVE_UP):
            return self._feed_back_fault(run, decision, result)
        return None

    def _feed_back_fault(self, run: RunState, decision: Decision, result: ExecutionResult | None) -> ev.Retry | None:
        """A failed or rejected program costs a retry: the model is told why and
        how many it has left; with none left, it is asked for the failure summary."""
        run.conv.add(self._fault_message(run, decision, result))
        left, failures = decision.retries_left, decision.progress.failures
        if decision.fault == "failed" and decision.action is Action.GIVE_UP:
            run.logger.info("run.retries_exhausted", failures=failures)
        elif decision.fault == "failed":
            run.logger.info("run.retry", failures=failures, retries_left=left)
        elif decision.fault == "repeated":
            run.logger.info(
                "run.repeat_rejected", same_as=decision.same_as.step if decision.same_as else None, retries_left=left
            )
        elif decision.fault == "misnamed":
            run.logger.info("run.unknown_tool", names=list(decision.misnamed), retries_left=left)
        else:
            run.logger.info("run.truncated_reply", retries_left=left)
        if decision.action is Action.GIVE_UP:
            run.conv.add(UserMessage(text=self.prompts.failure_summary(failures)))
            return None
        return ev.Retry(run.run_id, failures=failures, retries_left=left, reason=decision.reason)

    def _fault_message(self, run: RunState, decision: Decision, result: ExecutionResult | None) -> Message:
        left = decision.retries_left
        if decision.fault == "failed" and result is not None:
            return self._with_figures(ExecutionMessage(result=result, feedback=self.prompts.feedback(result, left)))
        if decision.fault == "repeated" and decision.same_as is not None:
            same = decision.same_as
            note = ExecutionResult(
                outcome=Outcome.FAILED,
                error_type="RepeatedProgram",
                error_message=f"the same program as attempt {same.step}, not run again",
            )
            return ExecutionMessage(result=note, feedback=self.prompts.repeated(same.step, same.result, left))
        if decision.fault == "truncated":
            return UserMessage(text=self.prompts.truncated(left))
        return UserMessage(text=self.prompts.unknown_tools(list(decision.misnamed), left, tools=not run.fenced))

    def _finish(self, run: RunState) -> RunResult:
        status, progress = run.status(), run.progress
        result = RunResult(
            prompt=run.prompt,
            summary=run.summary.strip(),
            status=status,
            attempts=list(progress.attempts),
            usage=run.usage,
            wall_time_s=time.perf_counter() - run.started,
            model_time_s=run.model_time,
            execution_time_s=run.execution_time,
            run_id=run.run_id,
            model=self._model_name,
            executor=self._executor_name,
            error=run.error,
            repeats_rejected=progress.repeats,
            code_requested=progress.code_requested,
            peak_request_tokens=run.peak_request_tokens,
        )
        run.logger.info(
            "run.done",
            status=status.value,
            attempts=len(progress.attempts),
            tokens=run.usage.total_tokens,
            duration_ms=round(result.wall_time_s * 1000, 1),
        )
        return result

    # -- helpers ------------------------------------------------------------

    def _starts_fenced(self) -> bool:
        if self.config.tools != "auto":
            return self.config.tools == "off"
        known = model_trait(self.model, "native_tool_calls")
        if known is None:
            known = self.profile.native_tool_calls
        return known is False

    def _system(self, run: RunState) -> str:
        stateful = getattr(self.executor, "stateful", False)
        return self.prompts.system(self.limits, run.inputs, stateful=stateful, tools=not run.fenced)

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

    def _with_figures(self, feedback: ExecutionMessage) -> ExecutionMessage:
        """The figures the code drew, attached for a model that takes images (the rest named in the text)."""
        return with_figures(feedback, self.config.images, self.takes_images)

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
