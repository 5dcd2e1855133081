"""The loop's decisions, kept apart so they can be tested alone: does a prompt
need code, is a program a repeat of one that failed, and, after each reply and
each execution, what the loop does next (:func:`decide_reply`,
:func:`decide_execution`)."""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from executors.base import ExecutionResult, InputFile, Outcome

from .extract import parses
from .types import Attempt

RequireCode = Literal["auto", "always", "never"]
ToolMode = Literal["auto", "on", "off"]

# Words that ask for a computed result. A question about concepts ("what is
# the difference between a list and a tuple") matches none of them.
_COMPUTE = re.compile(
    r"\b(?:comput\w*|calculat\w*|sum|total|average|mean|median|mode|std|standard deviation|variance|"
    r"count|how many|how much|percent\w*|ratio|maximum|minimum|max|min|highest|lowest|largest|smallest|"
    r"plot\w*|chart|graph|histogram|figure|simulat\w*|solve|integra\w*|derivative|factori[sz]\w*|"
    r"prime\w*|fibonacci|probability|run (?:the |some |python )?code|generate (?:and run )?code|"
    r"evaluate|estimate|round\w*)\b"
    r"|\d\s*[-+*/^%]\s*\d",
    re.IGNORECASE,
)


def prompt_needs_code(prompt: str, files: Sequence[InputFile] = ()) -> bool:
    """Whether a prompt asks for something only running code can give
    reliably: it has input files, or asks to compute, count or plot."""
    return bool(files) or _COMPUTE.search(prompt) is not None


def code_required(policy: RequireCode, prompt: str, files: Sequence[InputFile] = ()) -> bool:
    if policy not in ("auto", "always", "never"):
        raise ValueError(f"require_code must be 'auto', 'always' or 'never', got {policy!r}")
    if policy == "auto":
        return prompt_needs_code(prompt, files)
    return policy == "always"


def normalized(code: str) -> str:
    """A program's shape without comments, blank lines and formatting, so a
    resent program counts as the same even when its spacing changed."""
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def repeated_failure(code: str, attempts: Sequence[Attempt]) -> Attempt | None:
    """The earlier failed attempt that ran exactly this program, if any."""
    shape = normalized(code)
    return next((a for a in attempts if not a.ok and normalized(a.code) == shape), None)


# -- the retry and step policy ------------------------------------------------
#
# After each model reply and each execution the loop asks one pure function
# what to do next. Nothing here talks to a model or an executor: the loop
# carries the decision out (adds the messages, runs the code, yields events).


@dataclass(frozen=True)
class Rules:
    """The bounds a run works within."""

    max_retries: int = 5
    max_steps: int = 10
    verify: bool = False  # ask once to check the output before the first answer after working code


@dataclass(frozen=True)
class Progress:
    """What a run has done so far, as the policy sees it."""

    needs_code: bool = False  # the task needs computing
    attempts: tuple[Attempt, ...] = ()
    failures: int = 0  # retries spent: failed executions and rejected programs
    steps: int = 0  # executions
    repeats: int = 0  # programs rejected as repeats of a failed one
    code_requested: bool = False
    summary_requested: bool = False
    verify_requested: bool = False
    accepting_code: bool = True  # False once the final answer (summary) was asked for

    @property
    def last_ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].ok

    def with_attempt(self, attempt: Attempt) -> Progress:
        return replace(self, attempts=(*self.attempts, attempt))


@dataclass(frozen=True)
class Reply:
    """A model reply, as the policy sees it."""

    code: str = ""  # the program its code blocks make ("" when none, or when code is not accepted)
    prose: bool = False  # words beside the code
    misnamed: tuple[str, ...] = ()  # calls to tools that were never offered (when it has no code)
    cut_off: bool = False  # it ended at the output limit


class Action(str, enum.Enum):
    RUN = "run"  # run the reply's code
    CONTINUE = "continue"  # the code worked: its output goes back, the model goes on
    ANSWER = "answer"  # stop: the reply is the answer
    ASK_ANSWER = "ask_answer"  # ask for the answer in words; code is no longer accepted
    REQUEST_CODE = "request_code"  # ask once for code the task needs
    REQUEST_VERIFY = "request_verify"  # ask once to check the output against the task
    RETRY = "retry"  # a failed or rejected program: feedback, and the model tries again
    GIVE_UP = "give_up"  # as RETRY with no retries left: feedback, then ask for the failure summary
    STOP = "stop"  # stop with an error: the executor broke


# What a RETRY or GIVE_UP is about.
Fault = Literal["failed", "repeated", "misnamed", "truncated"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    progress: Progress  # the run's state once the decision is carried out
    retries_left: int = 0  # what the model is told it has left
    fault: Fault | None = None
    same_as: Attempt | None = None  # the failed attempt a repeated program restates
    misnamed: tuple[str, ...] = ()  # the tools a rejected reply called that do not exist


def retries_left(progress: Progress, rules: Rules) -> int:
    """A retry is also a step, so the step bound may leave fewer retries than
    ``max_retries``: the model is told the number it really has."""
    return max(min(rules.max_retries + 1 - progress.failures, rules.max_steps - progress.steps), 0)


def decide_reply(progress: Progress, reply: Reply, rules: Rules) -> Decision:
    """What to do with a model reply (one the provider did not execute itself)."""
    if reply.misnamed:
        if progress.last_ok:
            return Decision(
                Action.ASK_ANSWER,
                "the program already ran; the answer in words is missing",
                replace(progress, accepting_code=False),
            )
        decision = _spend_retry(
            replace(progress, code_requested=True),
            rules,
            "misnamed",
            f"called a tool that does not exist: {', '.join(reply.misnamed)}",
        )
        return replace(decision, misnamed=reply.misnamed)
    if not reply.code:
        return _no_code(progress, rules)
    if progress.last_ok and normalized(reply.code) == normalized(progress.attempts[-1].code):
        # Running the program that already ran would only loop. An answer with
        # words beside the code stands; a bare restatement gets one request
        # for the answer in words.
        if reply.prose or progress.summary_requested:
            return Decision(Action.ANSWER, "restated the program that ran, with an answer", progress)
        return Decision(
            Action.ASK_ANSWER,
            "restated the program that ran, without an answer",
            replace(progress, summary_requested=True, accepting_code=False),
        )
    if reply.cut_off and not parses(reply.code):
        return _spend_retry(progress, rules, "truncated", "the reply was cut off at the output limit")
    repeat = repeated_failure(reply.code, progress.attempts)
    if repeat is not None:
        decision = _spend_retry(
            replace(progress, repeats=progress.repeats + 1),
            rules,
            "repeated",
            f"repeated the program of attempt {repeat.step}",
        )
        return replace(decision, same_as=repeat)
    return Decision(Action.RUN, "new code", replace(progress, steps=progress.steps + 1))


def _no_code(progress: Progress, rules: Rules) -> Decision:
    if (
        rules.verify
        and progress.accepting_code
        and not progress.verify_requested
        and progress.needs_code
        and progress.last_ok
    ):
        return Decision(
            Action.REQUEST_VERIFY, "check the output before answering", replace(progress, verify_requested=True)
        )
    if progress.accepting_code and progress.needs_code and not progress.code_requested and not progress.attempts:
        return Decision(
            Action.REQUEST_CODE, "the task needs computing and no code ran", replace(progress, code_requested=True)
        )
    return Decision(Action.ANSWER, "answered", progress)


def decide_execution(progress: Progress, result: ExecutionResult, rules: Rules) -> Decision:
    """What to do after an execution; ``progress`` already holds its attempt."""
    if result.outcome is Outcome.SANDBOX_ERROR:
        # The executor broke, not the code: new code cannot fix a wrong token
        # or a dead sandbox, so the run ends with the error (a batch marks it
        # for --resume) instead of spending the model's retries on it.
        error = f"executor failed: {result.error_type or 'SandboxError'}: {result.error_message or ''}"
        return Decision(Action.STOP, error.rstrip(": "), progress)
    if result.ok:
        left = retries_left(progress, rules)
        if progress.steps >= rules.max_steps:
            return Decision(
                Action.ASK_ANSWER,
                "the step bound is reached",
                replace(progress, accepting_code=False),
                retries_left=left,
            )
        return Decision(Action.CONTINUE, "the code ran", progress, retries_left=left)
    reason = f"{result.outcome.value}: {result.error_type or ''} {result.error_message or ''}".strip()
    return _spend_retry(progress, rules, "failed", reason)


def _spend_retry(progress: Progress, rules: Rules, fault: Fault, reason: str) -> Decision:
    """Count a failure; with no retries left, code is no longer accepted."""
    spent = replace(progress, failures=progress.failures + 1)
    left = retries_left(spent, rules)
    if left > 0:
        return Decision(Action.RETRY, reason, spent, retries_left=left, fault=fault)
    return Decision(Action.GIVE_UP, reason, replace(spent, accepting_code=False), retries_left=0, fault=fault)
