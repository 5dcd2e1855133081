"""Small decisions of the loop, kept apart so they can be tested alone: does a
prompt need code, is a program a repeat of one that failed."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Literal

from executors.base import InputFile

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
