"""Honest outcomes: which attempt earned a pass, and end-to-end runs with scripted models
where the answer sits only inside code or JSON, or a failed program is run again unchanged."""

import json

from benchmarks import run_benchmark
from benchmarks.refinement import answer_solved_at, first_passing_attempt, is_fix, program_key
from executors.base import ExecutionResult, Outcome
from orchestrator.models.scripted import ScriptedModel
from orchestrator.types import Attempt, ExecutionMessage, RunResult, RunStatus


def attempt(code, ok, stdout=""):
    return Attempt(code=code, result=ExecutionResult(outcome=Outcome.OK if ok else Outcome.FAILED, stdout=stdout))


def run_of(*attempts, summary=""):
    status = RunStatus.SOLVED if attempts and attempts[-1].ok else RunStatus.FAILED
    return RunResult(prompt="p", summary=summary, status=status, attempts=list(attempts))


def test_program_key_ignores_trailing_space_and_blank_lines():
    assert program_key("x = 1  \n\nprint(x)\n") == program_key("x = 1\nprint(x)")
    assert program_key("x = 1\nprint(x)") != program_key("x = 2\nprint(x)")


def test_only_a_changed_program_fixes_a_failure():
    attempts = [attempt("print(1/0)", False), attempt("print(1/0)  \n", True), attempt("print(1)", True)]
    assert is_fix(attempts, 0)  # nothing failed before it
    assert not is_fix(attempts, 1)  # the failed program again
    assert is_fix(attempts, 2)


def test_an_answer_item_credits_the_last_successful_execution():
    assert answer_solved_at(run_of(attempt("a", False), attempt("b", True)), correct=True) == 1
    assert answer_solved_at(run_of(attempt("a", True), attempt("b", False)), correct=True) == 0
    assert answer_solved_at(run_of(attempt("a", False), attempt("b", True)), correct=False) is None
    # A rerun of the failed program that happens to pass fixes nothing.
    assert answer_solved_at(run_of(attempt("a", False), attempt("a", True)), correct=True) is None
    assert answer_solved_at(run_of(), correct=True) == 0  # answered without code (an item that allows it)


async def test_each_distinct_program_is_checked_once_and_the_first_fix_counts():
    asked = []

    async def passes(code):
        asked.append(code)
        return code.startswith("good")

    # The first program passes the hidden tests though its own self-test failed: passed at k=0.
    assert await first_passing_attempt([attempt("good v1", False), attempt("good v2", True)], passes) == 0
    asked.clear()
    attempts = [attempt("bad", False), attempt("bad", False), attempt("good", True), attempt("good", True)]
    assert await first_passing_attempt(attempts, passes) == 2
    assert asked == ["bad", "good"]
    assert await first_passing_attempt([attempt("bad", False), attempt("bad", True)], passes) is None


# --- End to end, through the batch runner and the store ---------------------------------

ITEMS = [
    # The case: the number appears only inside JSON the model wrote as text; no code ran.
    {"id": "json-only", "prompt": "Ducks lay 16 eggs. How many?", "answer": 16},
    # The same number only inside a fenced program that never ran (unlabelled, not extractable as code).
    {"id": "code-only", "prompt": "Count the ducks.", "answer": 16},
    # Right: the program ran and printed it.
    {"id": "printed", "prompt": "Count the eggs.", "answer": 16},
    # Fails, then runs the identical program again, which passes: no fix.
    {"id": "rerun", "prompt": "Flaky count.", "answer": 3},
    # The first program defines the right function but its own self-test is wrong: passes the hidden test at k=0.
    {"id": "selftest", "prompt": "Write add(a, b).", "test": "assert add(2, 3) == 5"},
]


def make_script(flag_path):
    """A test double: one behaviour per prompt. 'Flaky' writes the same program every time; it fails
    until ``flag_path`` exists (its first run creates it)."""
    flaky = (
        f"import os, sys\nif not os.path.exists({str(flag_path)!r}):\n    open({str(flag_path)!r}, 'w').close()\n"
        "    sys.exit('not yet')\nprint(3)\n"
    )
    return lambda conversation, tools: script(conversation, tools, flaky)


def script(conversation, tools, flaky):
    prompt = conversation.first_prompt
    executions = [m for m in conversation.messages if isinstance(m, ExecutionMessage)]
    done = not tools or (executions and executions[-1].result.ok)
    if prompt.startswith("Ducks"):
        return '{"name": "run_python", "arguments": {"eggs_per_duck_per_day": 16}}'
    if prompt.startswith("Count the ducks"):
        return "```text\nducks = 16\n```"
    if prompt.startswith("Count the eggs"):
        return "It printed the count." if done else "```python\nprint(8 + 8)\n```"
    if prompt.startswith("Flaky"):
        return "The answer is 3." if done else f"```python\n{flaky}```"
    if done:
        return "Done."
    if not executions:
        return "```python\ndef add(a, b):\n    return a + b\nassert add(2, 2) == 5\n```"
    return "```python\ndef add(a, b):\n    return a + b\nprint(add(2, 3))\n```"


async def test_honest_outcomes_end_to_end(tmp_path):
    items_file = tmp_path / "items.jsonl"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    result = await run_benchmark(
        str(items_file),
        model=ScriptedModel(make_script(tmp_path / "flag"), name="double"),
        bench_dir=tmp_path / "b",
        executor="local",
        scoring_executor="local",
        max_retries=2,
    )
    scores = {r.item_id: r.score for r in result.records}
    assert not scores["json-only"].correct and "no successful execution" in scores["json-only"].detail
    assert scores["json-only"].got is None  # 16 is not read out of the JSON at all
    assert not scores["code-only"].correct and scores["code-only"].got is None
    assert scores["printed"].correct and scores["printed"].solved_at == 0
    assert scores["selftest"].correct and scores["selftest"].solved_at == 0
    runs = {r.item_id: r.run for r in result.records}
    # The loop does not run a program identical to one that failed: the resend costs a retry.
    assert [a.ok for a in runs["rerun"].attempts] == [False] and runs["rerun"].repeats_rejected >= 1
    assert not scores["rerun"].correct and scores["rerun"].solved_at is None
    assert [a.ok for a in runs["selftest"].attempts] == [False, True]  # its self-test failed first
    m = result.metrics
    assert (m.solved, m.ran_code, m.ran_code_ok) == (2, 3, 2)
    assert m.curve == [2, 2, 2, 2, 2, 2]  # printed and selftest at k=0; rerun never counts as fixed
