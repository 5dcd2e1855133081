"""The loop's retry and step policy, alone: pure functions of the run's
progress and the latest reply or execution. No model, no executor."""

from __future__ import annotations

import pytest

from executors import ExecutionResult, Outcome
from orchestrator.policy import Action, Progress, Reply, Rules, decide_execution, decide_reply, retries_left
from orchestrator.types import Attempt

OK = ExecutionResult(outcome=Outcome.OK, stdout="42\n")
FAILED = ExecutionResult(outcome=Outcome.FAILED, error_type="ValueError", error_message="boom")
BROKEN = ExecutionResult(outcome=Outcome.SANDBOX_ERROR, error_type="SandboxError", error_message="bwrap died")


def ran(code: str, result: ExecutionResult, step: int = 1) -> Attempt:
    return Attempt(code=code, result=result, step=step)


RULES = Rules(max_retries=2, max_steps=4)
FRESH = Progress(needs_code=True)
AFTER_OK = Progress(needs_code=True, steps=1, attempts=(ran("print(42)", OK),))
AFTER_FAIL = Progress(needs_code=True, steps=1, failures=1, attempts=(ran("raise ValueError('boom')", FAILED),))
SUMMARY_ASKED = Progress(needs_code=True, steps=1, attempts=(ran("print(42)", OK),), accepting_code=False)

REPLIES = [
    # (what happened so far, the reply, the rules) -> (action, changes to the progress)
    ("new code runs", FRESH, Reply(code="print(1)"), RULES, Action.RUN, {"steps": 1}),
    (
        "no code for a task that needs it: ask once",
        FRESH,
        Reply(),
        RULES,
        Action.REQUEST_CODE,
        {"code_requested": True},
    ),
    (
        "no code again after the request: the answer stands (unverified)",
        Progress(needs_code=True, code_requested=True),
        Reply(),
        RULES,
        Action.ANSWER,
        {},
    ),
    ("no code for a question that needs none", Progress(needs_code=False), Reply(), RULES, Action.ANSWER, {}),
    ("an answer after working code", AFTER_OK, Reply(), RULES, Action.ANSWER, {}),
    (
        "with verification on, the first answer after working code is checked first",
        AFTER_OK,
        Reply(),
        Rules(verify=True),
        Action.REQUEST_VERIFY,
        {"verify_requested": True},
    ),
    (
        "verification is asked once",
        Progress(needs_code=True, steps=1, attempts=AFTER_OK.attempts, verify_requested=True),
        Reply(),
        Rules(verify=True),
        Action.ANSWER,
        {},
    ),
    ("the reply to the summary request is the answer", SUMMARY_ASKED, Reply(), Rules(verify=True), Action.ANSWER, {}),
    (
        "a call to a tool never offered costs a retry",
        FRESH,
        Reply(misnamed=("python",)),
        RULES,
        Action.RETRY,
        {"failures": 1, "code_requested": True},
    ),
    (
        "a misnamed call after working code: ask for the answer in words",
        AFTER_OK,
        Reply(misnamed=("python",)),
        RULES,
        Action.ASK_ANSWER,
        {"accepting_code": False},
    ),
    (
        "the program that ran, restated with words: that is the answer",
        AFTER_OK,
        Reply(code="print( 42 )  # same", prose=True),
        RULES,
        Action.ANSWER,
        {},
    ),
    (
        "the program that ran, restated bare: ask for the answer",
        AFTER_OK,
        Reply(code="print(42)"),
        RULES,
        Action.ASK_ANSWER,
        {"summary_requested": True, "accepting_code": False},
    ),
    (
        "a program cut off at the output limit is not run",
        FRESH,
        Reply(code="def f(:\n", cut_off=True),
        RULES,
        Action.RETRY,
        {"failures": 1},
    ),
    (
        "a complete program at the output limit runs",
        FRESH,
        Reply(code="print(1)", cut_off=True),
        RULES,
        Action.RUN,
        {"steps": 1},
    ),
    (
        "the program that failed, sent again, is not run",
        AFTER_FAIL,
        Reply(code="raise ValueError( 'boom' )"),
        RULES,
        Action.RETRY,
        {"failures": 2, "repeats": 1},
    ),
    (
        "a repeat with no retries left gives up",
        AFTER_FAIL,
        Reply(code="raise ValueError('boom')"),
        Rules(max_retries=1, max_steps=4),
        Action.GIVE_UP,
        {"failures": 2, "repeats": 1, "accepting_code": False},
    ),
]


@pytest.mark.parametrize(
    ("progress", "reply", "rules", "action", "changes"), [row[1:] for row in REPLIES], ids=[row[0] for row in REPLIES]
)
def test_after_a_reply(progress, reply, rules, action, changes):
    decision = decide_reply(progress, reply, rules)
    assert decision.action is action, decision.reason
    changed = {k: getattr(decision.progress, k) for k in changes}
    assert changed == changes
    untouched = {k: v for k, v in vars(progress).items() if k not in changes}
    assert {k: getattr(decision.progress, k) for k in untouched} == untouched


EXECUTIONS = [
    ("working code: the model goes on", Progress(steps=1), OK, RULES, Action.CONTINUE, 3, {}),
    (
        "working code at the step bound: ask for the answer",
        Progress(steps=4),
        OK,
        RULES,
        Action.ASK_ANSWER,
        0,
        {"accepting_code": False},
    ),
    ("a failure with retries left", Progress(steps=1), FAILED, RULES, Action.RETRY, 2, {"failures": 1}),
    (
        "the last failure allowed: give up, ask for the failure summary",
        Progress(steps=3, failures=2),
        FAILED,
        RULES,
        Action.GIVE_UP,
        0,
        {"failures": 3, "accepting_code": False},
    ),
    (
        "the step bound leaves fewer retries than max_retries",
        Progress(steps=3),
        FAILED,
        RULES,
        Action.RETRY,
        1,
        {"failures": 1},
    ),
    (
        "max_retries=0: the first failure is final",
        Progress(steps=1),
        FAILED,
        Rules(max_retries=0, max_steps=4),
        Action.GIVE_UP,
        0,
        {"failures": 1, "accepting_code": False},
    ),
    ("a broken executor stops the run without spending retries", Progress(steps=1), BROKEN, RULES, Action.STOP, 0, {}),
]


@pytest.mark.parametrize(
    ("progress", "result", "rules", "action", "left", "changes"),
    [row[1:] for row in EXECUTIONS],
    ids=[row[0] for row in EXECUTIONS],
)
def test_after_an_execution(progress, result, rules, action, left, changes):
    decision = decide_execution(progress, result, rules)
    assert decision.action is action, decision.reason
    assert decision.retries_left == left
    assert {k: getattr(decision.progress, k) for k in changes} == changes


def test_the_reasons_say_what_happened():
    assert decide_execution(Progress(steps=1), BROKEN, RULES).reason == "executor failed: SandboxError: bwrap died"
    assert decide_execution(Progress(steps=1), FAILED, RULES).reason == "FAILED: ValueError boom"
    repeat = decide_reply(AFTER_FAIL, Reply(code="raise ValueError('boom')"), RULES)
    assert repeat.reason == "repeated the program of attempt 1" and repeat.same_as is AFTER_FAIL.attempts[0]
    misnamed = decide_reply(FRESH, Reply(misnamed=("python", "exec")), RULES)
    assert misnamed.reason == "called a tool that does not exist: python, exec"
    assert misnamed.misnamed == ("python", "exec")


def test_a_full_run_of_failures_spends_exactly_max_retries_plus_one_executions():
    rules, progress, executions = Rules(max_retries=5, max_steps=10), Progress(needs_code=True), 0
    while True:
        decision = decide_reply(progress, Reply(code=f"raise ValueError({executions})"), rules)
        assert decision.action is Action.RUN
        executions += 1
        decision = decide_execution(
            decision.progress.with_attempt(ran(f"raise ValueError({executions - 1})", FAILED, executions)),
            FAILED,
            rules,
        )
        progress = decision.progress
        if decision.action is Action.GIVE_UP:
            break
        assert decision.retries_left == 6 - executions
    assert executions == 6 and not progress.accepting_code
    assert decide_reply(progress, Reply(), rules).action is Action.ANSWER


def test_retries_left_never_goes_negative():
    assert retries_left(Progress(failures=9, steps=9), RULES) == 0
