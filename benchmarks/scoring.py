"""Scoring: reading numbers out of text, and deciding whether an item is solved.

The model's answer to a numeric item (GSM8K) is taken from its final
summary by this rule, first match wins:

1. the last ``\\boxed{...}`` holding a number;
2. the last number that follows "final answer", "answer is", "answer:" or
   "result is" (case-insensitive, up to 40 characters later on the same line);
3. the last bold span (``**...**`` or ``__...__``) holding a number;
4. the last number anywhere in the summary;
5. when the summary states no number at all: the last number printed
   (stdout) by the last execution that succeeded.

A number may carry a sign (``-`` or the Unicode minus, only when not glued to
a preceding digit or letter, so "3-4" reads as 3 and 4), a currency sign
(``$ € £``), thousands separators (``1,234,567``), decimals, an exponent, and
a trailing ``%`` or unit ("18 dollars", "5 km/h"): sign and digits are kept,
the rest is dropped. "25%" reads as 25, because GSM8K states percentages
that way. Two numbers match when they differ by at most 1e-6 relatively or
absolutely.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from executors.base import ExecutionResult, Executor, Limits, Outcome

REL_TOL = 1e-6
ABS_TOL = 1e-6

_NUMBER = re.compile(
    r"(?<![\w.])"  # not glued to a word, digit or decimal point before it
    r"(?P<sign>[-\u2212])?\s?[$€£]?\s?(?P<sign2>[-\u2212])?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?"
    r"(?!\d)"
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_PHRASE = re.compile(r"(?:final answer|answer is|answer:|result is)[^\n]{0,40}", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__", re.DOTALL)


def numbers_in(text: str) -> list[float]:
    """Every number in ``text``, in order, as floats."""
    values = []
    for m in _NUMBER.finditer(text):
        digits = m.group("num").replace(",", "") + (m.group("exp") or "")
        value = float(digits)
        if m.group("sign") or m.group("sign2"):
            value = -value
        values.append(value)
    return values


def parse_number(text: str) -> float | None:
    """The last number in ``text``, or None."""
    found = numbers_in(text)
    return found[-1] if found else None


def reference_answer(solution: str) -> str | None:
    """GSM8K: the number after the last ``####`` (commas removed), as written."""
    _, sep, tail = solution.rpartition("####")
    if not sep:
        return None
    value = parse_number(tail)
    if value is None:
        return None
    return format_number(value)


def format_number(value: float) -> str:
    """Integers without a decimal point; other values as Python prints them."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)


def extract_answer(summary: str, printed: str = "") -> float | None:
    """The model's numeric answer by the rule in this module's docstring."""
    for m in reversed(list(_BOXED.finditer(summary))):
        value = parse_number(m.group(1))
        if value is not None:
            return value
    for m in reversed(list(_ANSWER_PHRASE.finditer(summary))):
        found = numbers_in(m.group(0))
        if found:
            return found[0]
    for m in reversed(list(_BOLD.finditer(summary))):
        value = parse_number(m.group(1) or m.group(2))
        if value is not None:
            return value
    value = parse_number(summary)
    if value is not None:
        return value
    return parse_number(printed)


def numbers_match(a: float | None, b: float | None, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def normalise_exact(text: str) -> str:
    """Exact answers compare case-folded, whitespace-collapsed, without surrounding quotes/period."""
    return " ".join(text.strip().strip(".").strip("'\"`").split()).casefold()


@dataclass
class Score:
    """Whether one item was solved, and what was compared."""

    item_id: str
    correct: bool
    expected: str | None = None
    got: str | None = None
    detail: str = ""  # why it failed (a test's error), or empty
    scoring_time_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Score":
        return cls(**data)


def last_printed(stdouts: Sequence[str]) -> str:
    """The stdout of the last execution that printed anything."""
    return next((s for s in reversed(stdouts) if s.strip()), "")


def score_numeric(item_id: str, expected: str, summary: str, printed: str = "") -> Score:
    got = extract_answer(summary, printed)
    want = parse_number(expected)
    return Score(
        item_id=item_id,
        correct=numbers_match(got, want),
        expected=expected,
        got=None if got is None else format_number(got),
        detail="" if got is not None else "no number in the summary or the printed output",
    )


def score_exact(item_id: str, expected: str, summary: str) -> Score:
    """Exact answers: the summary's last non-empty line, or the whole summary, equals the reference."""
    lines = [line for line in summary.splitlines() if line.strip()]
    candidates = {normalise_exact(summary)} | ({normalise_exact(lines[-1])} if lines else set())
    got = lines[-1].strip() if lines else ""
    return Score(item_id=item_id, correct=normalise_exact(expected) in candidates, expected=expected, got=got)


# --- Code scoring -----------------------------------------------------------------


def definitions_only(code: str) -> str | None:
    """The part of a program that defines things: imports, functions, classes,
    and top-level assignments that call nothing. Tests and prints the model
    wrote for itself are dropped, so its own (possibly wrong) asserts cannot
    fail the scoring run. None when the code does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    kept = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kept.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            if not any(isinstance(n, ast.Call) for n in ast.walk(node.value)):
                kept.append(node)
    return "\n\n".join(ast.get_source_segment(code, n) or ast.unparse(n) for n in kept) + "\n"


def humaneval_program(source_prompt: str, code: str, test: str, entry_point: str) -> str:
    """The scored program: the problem's prompt (its imports and helper
    functions), then the model's definitions (which replace the prompt's stub),
    then the hidden test and ``check(entry_point)``.

    When the model's code does not parse on its own it is taken as a
    completion of the prompt (HumanEval's original format)."""
    defs = definitions_only(code)
    body = source_prompt + "    pass\n\n" + defs if defs is not None else source_prompt + code
    return f"{body}\n\n{test}\n\ncheck({entry_point})\n"


def test_program(code: str, test: str) -> str:
    """Custom items: the model's definitions, then the item's test code."""
    defs = definitions_only(code)
    return f"{defs if defs is not None else code}\n\n{test}\n"


class ScoringError(RuntimeError):
    """The scoring executor itself broke: the item is left unscored (a resume
    scores it again) rather than counted wrong for a fault that is not the model's."""


async def score_by_running(
    item_id: str, program: str, executor: Executor, limits: Limits | None = None
) -> tuple[Score, ExecutionResult]:
    """Run a scoring program: solved when it runs to the end without error."""
    result = await executor.execute(program, limits=limits)
    if result.outcome is Outcome.SANDBOX_ERROR:
        raise ScoringError(f"scoring item {item_id}: executor {executor.name!r} failed: "
                           f"{result.error_type or ''} {result.error_message or ''}".rstrip())
    detail = ""
    if not result.ok:
        detail = f"{result.outcome.value}: {result.error_type or ''} {result.error_message or ''}".strip()
    return Score(item_id=item_id, correct=result.ok, detail=detail, scoring_time_s=result.duration_s), result
