"""Answer extraction and comparison, and the programs that score code."""

import pytest

from benchmarks.scoring import (
    ScoringError,
    definitions_only,
    extract_answer,
    format_number,
    humaneval_program,
    numbers_in,
    numbers_match,
    parse_number,
    prose,
    reference_answer,
    score_by_running,
    score_exact,
    score_numeric,
)
from executors.base import ExecutionResult, Outcome
from executors.testing import FunctionExecutor, returning


@pytest.mark.parametrize(
    "text, expected",
    [
        ("18", 18),
        ("$18", 18),
        ("$1,234,567.50", 1234567.5),
        ("1,234", 1234),
        ("18 dollars", 18),
        ("5 km/h", 5),
        ("12kg", 12),
        ("-7", -7),
        ("\u22127", -7),  # Unicode minus
        ("-$5", -5),
        ("$-5", -5),
        ("a loss of -3.25 dollars", -3.25),
        ("0.5", 0.5),
        (".75", 0.75),
        ("25%", 25),
        ("1.5e3", 1500),
        ("It is 18.", 18),  # a full stop is not a decimal point
        ("3-4", 4),  # a hyphen glued to a digit is not a sign
        ("between 3 - 4", -4),  # spaced: read as a sign
        ("1,2,3", 3),  # not a thousands group
        ("room A12 holds 30", 30),  # digits glued to letters are not numbers
        ("no numbers here", None),
    ],
)
def test_parse_number_reads_the_last_number(text, expected):
    assert parse_number(text) == expected


def test_numbers_in_keeps_order_and_signs():
    assert numbers_in("Janet sells 16 - 3 - 4 = 9 eggs for $18") == [16, -3, -4, 9, 18]


@pytest.mark.parametrize(
    "summary, printed, expected",
    [
        ("We computed 3 things. The final answer is 42.", "", 42),
        ("The answer is $1,250, after 3 steps.", "", 1250),
        ("Answer: -17 degrees; I checked 2 cases.", "", -17),
        (r"So the total is \boxed{72} (from 8 * 9).", "", 72),
        (r"\boxed{72} and later \boxed{80}", "", 80),
        ("She makes **18** dollars per day, 7 days a week.", "", 18),
        ("Profit: 20 - 5 = 15 dollars", "", 15),
        ("The program printed the result.", "12\n70000\n", 70000),
        ("The result is 25%.", "", 25),
        ("Nothing to say.", "", None),
        # An answer phrase wins over later numbers.
        ("The final answer is 9. (It took 4 steps and 2 retries.)", "", 9),
        # An explicit statement wins over the printed number; the printed number over a bare one in prose.
        ("The answer is 5.", "6\n", 5),
        ("It is 5.", "6\n", 6),
        ("It is 5.", "", 5),
        # Never a number inside code or JSON (the issue: '16' read from a tool call written as text).
        ('{"name": "run_python", "arguments": {"eggs_per_duck_per_day": 16}}', "", None),
        ('<tool_call>\n{"name": "run_python", "arguments": {"code": "x = 16\\nprint(x)"}}\n</tool_call>', "", None),
        ("Here it is:\n```python\nanswer = 16\nprint(answer)\n```\n", "", None),
        ("Here it is:\n```python\nanswer = 16\n", "", None),  # an unclosed fence runs to the end
        ("The variable `total = 16` holds it.", "", None),
        ('Result: {"total": 16}. So she earns 18 dollars.', "", 18),
        ("```python\nprint(16)\n```\nThe answer is 18.", "", 18),
        ('{"eggs": 16} and the program printed it.', "18\n", 18),
        ("A set like {1, 2} is not JSON, so 2 counts.", "", 2),
    ],
)
def test_extract_answer_follows_the_documented_rule(summary, printed, expected):
    assert extract_answer(summary, printed) == expected


def test_prose_drops_code_json_and_tool_calls():
    summary = (
        "I wrote `f(3)` and ran it.\n```python\nprint(3)\n```\n<think>maybe 7</think>"
        '{"name": "run_python", "arguments": {"code": "print(1)"}}\nThe total is 9.'
    )
    text = prose(summary)
    assert "3" not in text and "7" not in text and "1" not in text and "The total is 9." in text


def test_numbers_match_with_tolerance():
    assert numbers_match(18, 18.0)
    assert numbers_match(0.1 + 0.2, 0.3)
    assert numbers_match(1e9, 1e9 + 1)  # relative tolerance 1e-6
    assert not numbers_match(18, 18.01)
    assert not numbers_match(-5, 5)
    assert not numbers_match(None, 5)


def test_reference_answer_is_the_number_after_hashes():
    assert reference_answer("2 + 2 = <<2+2=4>>4\n#### 4") == "4"
    assert reference_answer("...\n#### 70,000") == "70000"
    assert reference_answer("...\n#### -3") == "-3"
    assert reference_answer("...\n#### 2.5") == "2.5"
    assert reference_answer("no marker 5") is None


def test_format_number():
    assert format_number(18.0) == "18"
    assert format_number(-2.5) == "-2.5"


def test_score_numeric_reports_what_it_compared():
    good = score_numeric("q1", "70000", "So he made a profit of $70,000.")
    assert good.correct and good.got == "70000" and good.expected == "70000"
    bad = score_numeric("q2", "18", "The answer is 19.")
    assert not bad.correct and bad.got == "19"
    none = score_numeric("q3", "18", "I do not know.")
    assert not none.correct and none.got is None and "no number" in none.detail


def test_a_program_of_thought_answer_without_a_successful_execution_is_wrong():
    stated = score_numeric("q", "18", "The answer is 18.", "", ran_ok=False, requires_code=True)
    assert not stated.correct and stated.got == "18" and "no successful execution" in stated.detail
    assert score_numeric("q", "18", "The answer is 18.", "18\n", ran_ok=True, requires_code=True).correct
    assert score_numeric("q", "18", "The answer is 18.", "", ran_ok=False, requires_code=False).correct
    assert not score_exact("e", "Paris", "Paris", "", ran_ok=False, requires_code=True).correct


def test_score_exact_reads_prose_and_printed_output_never_code():
    assert score_exact("e", "Paris", "Done.", "Paris\n").correct
    assert not score_exact("e", "Paris", "```python\nprint('Paris')\n```").correct


def test_score_exact_normalises_case_space_and_full_stop():
    assert score_exact("e", "Paris", "The capital:\nparis.").correct
    assert score_exact("e", "New  York", "new york").correct
    assert not score_exact("e", "Paris", "London").correct


def test_definitions_only_drops_the_models_own_tests():
    code = (
        "import math\n"
        "LIMIT = 10\n"
        "cache = dict()\n"  # a call: dropped
        "def f(x):\n    return x + 1\n"
        "class C:\n    pass\n"
        "assert f(1) == 3\n"
        "print(f(2))\n"
        "for i in range(3):\n    print(i)\n"
        "if __name__ == '__main__':\n    print('main')\n"
    )
    kept = definitions_only(code)
    assert "import math" in kept and "LIMIT = 10" in kept and "def f" in kept and "class C" in kept
    assert "assert" not in kept and "print" not in kept and "cache" not in kept and "__main__" not in kept
    assert definitions_only("def broken(:\n") is None


def test_humaneval_program_uses_definitions_then_hidden_test():
    prompt = 'def add(a, b):\n    """Add."""\n'
    test = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    program = humaneval_program(prompt, "def add(a, b):\n    return a + b\nassert add(1, 1) == 3\n", test, "add")
    assert "assert add(1, 1) == 3" not in program  # the model's wrong self-test is not scored
    assert program.rstrip().endswith("check(add)")
    namespace: dict = {}
    exec(compile(program, "<scored>", "exec"), namespace)  # runs cleanly: the solution is right


def test_humaneval_program_takes_unparsable_code_as_a_completion():
    prompt = 'def add(a, b):\n    """Add."""\n'
    program = humaneval_program(prompt, "    return a + b\n", "def check(c):\n    assert c(1, 2) == 3\n", "add")
    namespace: dict = {}
    exec(compile(program, "<scored>", "exec"), namespace)


def canned(result: ExecutionResult) -> FunctionExecutor:
    """Test double: returns one fixed result for any code."""
    return FunctionExecutor(returning(result), name="canned")


async def test_score_by_running_passes_and_fails_on_the_outcome():
    good, _ = await score_by_running("i", "x", canned(ExecutionResult(outcome=Outcome.OK)))
    assert good.correct and good.detail == ""
    failed = ExecutionResult(outcome=Outcome.FAILED, error_type="AssertionError", error_message="t1")
    bad, _ = await score_by_running("i", "x", canned(failed))
    assert not bad.correct and bad.detail == "FAILED: AssertionError t1"


async def test_a_broken_scoring_executor_stops_scoring_instead_of_counting_the_item_wrong():
    broken = ExecutionResult(outcome=Outcome.SANDBOX_ERROR, error_type="OSError", error_message="no bwrap")
    with pytest.raises(ScoringError, match="executor 'canned' failed: OSError no bwrap"):
        await score_by_running("i", "x", canned(broken))
