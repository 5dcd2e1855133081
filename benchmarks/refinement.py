"""Which attempt earned an item's pass, and after how many failed executions.

The refinement curve asks: would the item be solved if the model could
refine its code at most k times after errors? An item passes at k when an
attempt (one execution) passes and at most k executions failed before it.
A pass after failures counts only as a *fix*: the passing program must
differ from every program that failed before it (running the same code again
fixes nothing, even when it happens to pass the second time).

What "an attempt passes" means depends on how the item is scored:

- code items (HumanEval, custom ``test``): each attempt's own program is run
  against the hidden tests (:func:`first_passing_attempt`);
- answer items (GSM8K, numeric, exact, expectations): the answer is read from
  the final summary and the last successful execution's output, so when the
  answer is right the credit goes to the last successful execution
  (:func:`answer_solved_at`).

The result is stored as ``Score.solved_at`` (None: no attempt earned a pass).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from orchestrator.types import Attempt, RunResult


def program_key(code: str) -> str:
    """What makes two programs the same: their lines without trailing spaces, blank lines dropped."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def failures_before(attempts: Sequence[Attempt], index: int) -> int:
    return sum(1 for a in attempts[:index] if not a.ok)


def is_fix(attempts: Sequence[Attempt], index: int) -> bool:
    """True when attempt ``index`` runs a program no earlier failed attempt ran
    (always true when nothing failed before it)."""
    key = program_key(attempts[index].code)
    return all(program_key(a.code) != key for a in attempts[:index] if not a.ok)


def last_successful(attempts: Sequence[Attempt]) -> int | None:
    return next((i for i in range(len(attempts) - 1, -1, -1) if attempts[i].ok), None)


def last_successful_stdout(run: RunResult) -> str:
    """The printed output answers are read from: the last successful execution's stdout."""
    index = last_successful(run.attempts)
    return run.attempts[index].result.stdout if index is not None else ""


def answer_solved_at(run: RunResult, correct: bool) -> int | None:
    """For an answer item: failed executions before the last successful one, when
    the answer is right and that execution's program is a fix. A right answer
    with no execution at all (an item that needs no code) counts at k=0; one
    whose executions all failed counts by the run's retries."""
    if not correct:
        return None
    if not run.attempts:
        return 0
    index = last_successful(run.attempts)
    if index is None:
        return run.retries
    return failures_before(run.attempts, index) if is_fix(run.attempts, index) else None


async def first_passing_attempt(attempts: Sequence[Attempt], passes: Callable[[str], Awaitable[bool]]) -> int | None:
    """For a code item: the fewest failed executions before an attempt whose program
    ``passes`` the hidden tests and is a fix. ``passes`` is asked once per distinct program."""
    verdicts: dict[str, bool] = {}
    for index, attempt in enumerate(attempts):
        key = program_key(attempt.code)
        if key not in verdicts:
            verdicts[key] = await passes(attempt.code)
        if verdicts[key] and is_fix(attempts, index):
            return failures_before(attempts, index)
    return None
