"""Expectations for open prompts: the checks behind a custom item's ``expect`` field.

A prompt set (``benchmarks/data/prompts/prompts.jsonl``) asks the kind of
questions Gemini's code-execution docs show: questions over CSV and text
files, plots, maths, string puzzles. Each line's ``expect`` is a list of
checks, all of which must hold:

- ``{"number": 152.43, "tol": 0.01}``: the number is stated. ``tol`` is
  absolute (default: 1e-6, relative or absolute).
- ``{"text": "East"}`` or ``{"text": ["East", "eastern"]}``: the text (any one
  of the alternatives) is stated, case-insensitively.
- ``{"file": "trig.png"}``: an execution produced an artifact of that name
  (a ``.png`` must start with the PNG signature, unless it was too large to keep).
- ``{"no_code": true}``: the model answered without running any code.

"Stated" means: in the **prose** of the final summary (the summary with its
code, inline code, tool-call text and JSON removed, see
:func:`benchmarks.scoring.prose`); only when the prose states no number at
all (number checks) or nothing at all (text checks) is the printed output of
the last successful execution read instead. So a model that prints a whole
table and then names the wrong row is wrong, and a number inside code never
counts. An item without a ``no_code`` check needs a successful execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from orchestrator.types import RunResult

from .refinement import last_successful, last_successful_stdout
from .scoring import (
    ABS_TOL,
    NO_SUCCESSFUL_EXECUTION,
    REL_TOL,
    Score,
    format_number,
    numbers_in,
    numbers_match,
    prose,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHECK_KINDS = ("number", "text", "file", "no_code")


class CheckSpecError(ValueError):
    """A check that cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class Check:
    kind: str  # one of CHECK_KINDS
    number: float | None = None
    tol: float | None = None  # absolute; None: the default 1e-6 relative or absolute
    texts: tuple[str, ...] = ()
    file: str | None = None

    def describe(self) -> str:
        if self.kind == "number":
            return format_number(self.number or 0.0) + (f" ±{self.tol:g}" if self.tol is not None else "")
        if self.kind == "text":
            return " or ".join(repr(t) for t in self.texts)
        if self.kind == "file":
            return f"file {self.file}"
        return "no code"

    def to_json(self) -> dict[str, Any]:
        if self.kind == "number":
            return {"number": self.number, **({"tol": self.tol} if self.tol is not None else {})}
        if self.kind == "text":
            return {"text": list(self.texts)}
        if self.kind == "file":
            return {"file": self.file}
        return {"no_code": True}


def parse_check(spec: Any) -> Check:
    """One check from its JSON form; raises :class:`CheckSpecError` naming the problem."""
    if not isinstance(spec, dict):
        raise CheckSpecError(f"a check must be an object, got {type(spec).__name__}")
    kinds = [k for k in CHECK_KINDS if k in spec]
    if len(kinds) != 1:
        raise CheckSpecError(f"a check needs exactly one of {', '.join(CHECK_KINDS)}; got keys {sorted(spec)}")
    kind = kinds[0]
    extra = set(spec) - {kind} - ({"tol"} if kind == "number" else set())
    if extra:
        raise CheckSpecError(f"{kind} check: unknown keys {sorted(extra)}")
    value = spec[kind]
    if kind == "number":
        tol = spec.get("tol")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckSpecError(f"number check: 'number' must be a number, got {value!r}")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0):
            raise CheckSpecError(f"number check: 'tol' must be a number >= 0, got {tol!r}")
        return Check(kind="number", number=float(value), tol=None if tol is None else float(tol))
    if kind == "text":
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise CheckSpecError(f"text check: 'text' must be a non-empty string or list of them, got {value!r}")
        return Check(kind="text", texts=tuple(texts))
    if kind == "file":
        if not isinstance(value, str) or not value.strip() or PurePath(value).name != value:
            raise CheckSpecError(f"file check: 'file' must be a plain file name, got {value!r}")
        return Check(kind="file", file=value)
    if value is not True:
        raise CheckSpecError(f"no_code check: 'no_code' must be true, got {value!r}")
    return Check(kind="no_code")


def parse_checks(specs: Any) -> list[Check]:
    if not isinstance(specs, list) or not specs:
        raise CheckSpecError("'expect' must be a non-empty list of checks")
    checks = []
    for index, spec in enumerate(specs):
        try:
            checks.append(parse_check(spec))
        except CheckSpecError as exc:
            raise CheckSpecError(f"expect[{index}]: {exc}") from None
    return checks


def needs_code(checks: list[Check]) -> bool:
    return not any(c.kind == "no_code" for c in checks)


def _close(a: float, check: Check) -> bool:
    if check.tol is None:
        return numbers_match(a, check.number, REL_TOL, ABS_TOL)
    return abs(a - (check.number or 0.0)) <= check.tol + 1e-12


def _failed_check(check: Check, run: RunResult, text: str, printed: str) -> str | None:
    """Why ``check`` fails on this run, or None when it holds."""
    if check.kind == "number":
        stated = numbers_in(text) or numbers_in(printed)
        return None if any(_close(n, check) for n in stated) else f"{check.describe()} not stated"
    if check.kind == "text":
        haystack = (text if any(ch.isalnum() for ch in text) else printed).casefold()
        return None if any(t.casefold() in haystack for t in check.texts) else f"{check.describe()} not stated"
    if check.kind == "file":
        return None if _produced(run, check.file or "") else f"no artifact named {check.file}"
    return None if not run.attempts else f"{len(run.attempts)} execution(s) ran"


def _produced(run: RunResult, name: str) -> bool:
    for artifact in run.artifacts:
        if PurePath(artifact.name).name != name:
            continue
        if artifact.truncated or not name.lower().endswith(".png"):
            return artifact.truncated or artifact.size > 0
        if artifact.data.startswith(PNG_SIGNATURE):
            return True
    return False


def check_expectations(item_id: str, checks: list[Check], run: RunResult, *, requires_code: bool) -> Score:
    """Score a run against its item's checks: correct when every check holds
    (and, when ``requires_code``, some execution succeeded)."""
    printed = last_successful_stdout(run)
    text = prose(run.summary)
    failures = [why for c in checks if (why := _failed_check(c, run, text, printed))]
    if requires_code and last_successful(run.attempts) is None:
        failures.insert(0, NO_SUCCESSFUL_EXECUTION)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    got = lines[-1] if lines else (printed.strip().splitlines() or [""])[-1]
    return Score(
        item_id=item_id,
        correct=not failures,
        expected="; ".join(c.describe() for c in checks),
        got=got[:200],
        detail="; ".join(failures),
    )
