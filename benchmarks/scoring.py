"""Scoring: reading numbers out of text, and deciding whether an item is solved.

Numbers are read only from two places, never from code:

- the **prose** of the final summary: the summary with fenced code blocks,
  inline code, ``<think>`` and ``<tool_call>`` sections and JSON objects (a
  brace span holding a ``"key":``) removed, so ``"eggs_per_duck": 16`` in a
  tool call the model wrote as text is not an answer;
- the **printed output** (stdout) of the run's last successful execution.

The model's answer to a numeric item (GSM8K) is, first match wins:

1. the last ``\\boxed{...}`` in the prose holding a number;
2. the last number that follows "final answer", "answer is", "answer:" or
   "result is" in the prose (case-insensitive, up to 40 characters later on
   the same line);
3. the last bold span (``**...**`` or ``__...__``) in the prose holding a number;
4. the last number printed by the last successful execution;
5. the last number anywhere in the prose.

Program-of-thought items (GSM8K, and custom answer items unless they say
``"requires_code": false``) cannot score correct without a successful
execution, whatever the summary states.

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
# Fenced blocks (any label; an unclosed fence runs to the end), reasoning and tool-call sections.
_FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_TAGGED = re.compile(r"<(think|tool_call|function_call|tool_code)>.*?(?:</\1>|\Z)", re.DOTALL | re.IGNORECASE)
_INLINE_CODE = re.compile(r"(`+)[^`\n]+?\1")
_JSON_KEY = re.compile(r"[\"'][^\"'\n]{0,200}[\"']\s*:")


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


def _json_spans(text: str) -> list[tuple[int, int]]:
    """Balanced ``{...}`` spans (quotes respected) that hold a ``"key":``: JSON or dict literals."""
    spans, depth, start, quote, escaped = [], 0, 0, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch == '"' and depth:
            quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and _JSON_KEY.search(text, start, i):
                spans.append((start, i + 1))
    if depth and _JSON_KEY.search(text, start):  # cut off mid-object: drop the rest
        spans.append((start, len(text)))
    return spans


def prose(summary: str) -> str:
    """The summary without code: fenced blocks, inline code, think and tool-call
    sections, and JSON objects are removed (each replaced by a space)."""
    text = _TAGGED.sub(" ", summary)
    text = _FENCED.sub(" ", text)
    for start, end in reversed(_json_spans(text)):
        text = text[:start] + " " + text[end:]
    return _INLINE_CODE.sub(" ", text)


def extract_answer(summary: str, printed: str = "") -> float | None:
    """The model's numeric answer by the rule in this module's docstring:
    ``summary`` is the final summary (its code is dropped here), ``printed``
    the stdout of the last successful execution."""
    text = prose(summary)
    for m in reversed(list(_BOXED.finditer(text))):
        value = parse_number(m.group(1))
        if value is not None:
            return value
    for m in reversed(list(_ANSWER_PHRASE.finditer(text))):
        found = numbers_in(m.group(0))
        if found:
            return found[0]
    for m in reversed(list(_BOLD.finditer(text))):
        value = parse_number(m.group(1) or m.group(2))
        if value is not None:
            return value
    value = parse_number(printed)
    if value is not None:
        return value
    return parse_number(text)


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
    # Failed executions before the attempt credited with the pass (see benchmarks.refinement);
    # None when no attempt passed, or the passing program only repeated one that had failed.
    solved_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Score:
        return cls(**data)


NO_SUCCESSFUL_EXECUTION = "no successful execution: this item's answer must come from code that ran"


def score_numeric(
    item_id: str, expected: str, summary: str, printed: str = "", *, ran_ok: bool = True, requires_code: bool = False
) -> Score:
    """``printed``: the last successful execution's stdout; ``ran_ok``: whether any execution succeeded."""
    got = extract_answer(summary, printed)
    want = parse_number(expected)
    detail = "" if got is not None else "no number in the summary's prose or the printed output"
    correct = numbers_match(got, want)
    if requires_code and not ran_ok:
        correct, detail = False, NO_SUCCESSFUL_EXECUTION
    return Score(
        item_id=item_id,
        correct=correct,
        expected=expected,
        got=None if got is None else format_number(got),
        detail=detail,
    )


def score_exact(
    item_id: str, expected: str, summary: str, printed: str = "", *, ran_ok: bool = True, requires_code: bool = False
) -> Score:
    """Exact answers: the prose's last non-empty line, the whole prose, or the last
    line printed by the last successful execution equals the reference."""
    text = prose(summary)
    lines = [line for line in text.splitlines() if line.strip()]
    printed_lines = [line for line in printed.splitlines() if line.strip()]
    candidates = {normalise_exact(text)} | {normalise_exact(ls[-1]) for ls in (lines, printed_lines) if ls}
    got = lines[-1].strip() if lines else (printed_lines[-1].strip() if printed_lines else "")
    correct, detail = normalise_exact(expected) in candidates, ""
    if requires_code and not ran_ok:
        correct, detail = False, NO_SUCCESSFUL_EXECUTION
    return Score(item_id=item_id, correct=correct, expected=expected, got=got, detail=detail)


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
        definition = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        # A constant assignment is kept; one that calls something might do work.
        constant = (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and node.value is not None
            and not any(isinstance(n, ast.Call) for n in ast.walk(node.value))
        )
        if definition or constant:
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
        raise ScoringError(
            f"scoring item {item_id}: executor {executor.name!r} failed: "
            f"{result.error_type or ''} {result.error_message or ''}".rstrip()
        )
    detail = ""
    if not result.ok:
        detail = f"{result.outcome.value}: {result.error_type or ''} {result.error_message or ''}".strip()
    return Score(item_id=item_id, correct=result.ok, detail=detail, scoring_time_s=result.duration_s), result
