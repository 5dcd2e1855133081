"""What the loop says to the model: the system instruction, the feedback after
each execution, and the request for a final summary. Every piece can be
replaced by passing a different :class:`Prompts` to the orchestrator."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from executors import jsondata
from executors.base import ExecutionResult, InputFile, Limits

# The fallback when the executor names no interpreter to probe (see executors.modules).
# Importable module names only: a line such as "the Python standard library"
# was once read by a model as a module to import.
DEFAULT_LIBRARIES = ("numpy", "pandas", "matplotlib", "sympy")
STANDARD_MODULES = ("math", "statistics", "itertools", "collections", "csv", "json", "re", "datetime")

SYSTEM_TEMPLATE = """\
You solve tasks by writing Python code that is run for you. {how_to_run}
The code runs in a fresh, isolated Python 3 process{state_note}; its printed output, \
errors and files come back to you.

The environment:
- Importable modules: {libraries}, and the standard library ({standard_modules}). \
There is no network access and nothing can be installed.
- Limits: {timeout:g} s of wall time and {memory} of memory per run.
- Files: files you write in the current working directory are returned to the user; \
save a file under the exact name the user asks for. matplotlib figures are captured \
as PNG automatically (plt.show() is not needed).{file_list}

Rules:
- Compute every number with code; never guess or invent a result. Read input files with code.
- Print each result with print(), and print checks that make mistakes visible: counts, \
the first and last items, shapes.
- When the printed output answers the task, reply with a short final answer in plain \
text that states the result, with no code.{example}"""

TOOL_INSTRUCTIONS = (
    "To run code, call the `run_python` tool with the complete program as its `code` argument. "
    "The program is plain Python: never write `run_python(...)` inside it."
)
FENCE_INSTRUCTIONS = (
    "To run code, write one complete program in a single fenced block that starts with ```python "
    "and ends with ```. The block is plain Python: do not wrap it in a function call or in JSON."
)

FEEDBACK_OK = (
    "The code ran successfully.\n{output}\n"
    "Check this output against the task: does it answer exactly what was asked (the right items, the "
    "right count, every part of the question)? If it does, give the final answer in plain text. "
    "If not, write a corrected program."
)
FEEDBACK_FAILED = (
    "The code failed ({outcome}).\n{output}{error}\nFix the code and run it again ({retries_left} retries left)."
)
REPEATED_CODE = (
    "This program is the same as attempt {attempt}, which failed with {error}. It was not run again: "
    "it would fail the same way. Change the code to fix that error ({retries_left} retries left)."
)
UNKNOWN_TOOL = "Nothing was run: there is no tool named {names}. {how_to_run} ({retries_left} retries left)."
TRUNCATED_REPLY = (
    "Your reply was cut off at the output limit, so the program is incomplete and was not run. "
    "Write a shorter, complete program: do not copy the task's text or docstrings, and stop after "
    "the closing ``` ({retries_left} retries left)."
)
CODE_REQUEST = (
    "You answered without running code, but this task needs its result computed{reason}. "
    "Write a Python program that computes the answer and prints it. Do not guess numbers."
)
VERIFY_REQUEST = (
    "Before you answer, test your result with a second program. The task was:\n{task}\n"
    "Write a short program that recomputes the result and prints one check for each requirement "
    "of the task, such as the number of items (with len) when the task names a count, the first and "
    "last items, or that a requested file exists. Then, when every check holds, give the final answer."
)
SUMMARY_REQUEST = "Now give your final answer: a short summary in plain text of the result, without any code block."
FAILURE_SUMMARY_REQUEST = (
    "No retries are left: the code failed {failures} times, so the task failed and no result was "
    "verified. Without writing code, tell the user in two or three sentences that it failed, what "
    "the last error was, and any partial result the code really printed."
)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def clip(text: str, limit: int, keep_tail: bool = True) -> str:
    """Shorten ``text`` to about ``limit`` characters, keeping the head and
    (for errors, where the last lines matter most) the tail."""
    if len(text) <= limit:
        return text
    if not keep_tail:
        return text[:limit] + f"\n[... {len(text) - limit} more characters]"
    head = limit // 3
    tail = limit - head
    return text[:head] + f"\n[... {len(text) - limit} characters trimmed ...]\n" + text[-tail:]


def trim_traceback(tb: str, limit: int = 2000) -> str:
    """Keep the frames in the user's code and the error line.

    The harness already drops the executor's own frames; this drops library
    frames in the middle too (numpy/pandas internals), which only cost tokens,
    and keeps the first and last user frame and the final error line.
    """
    tb = ANSI.sub("", tb).rstrip()
    lines = tb.splitlines()
    if not lines:
        return ""
    kept: list[str] = []
    skipped = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  File "):
            block = [line]
            j = i + 1
            while j < len(lines) and lines[j].startswith("    "):
                block.append(lines[j])
                j += 1
            if '"<code>"' in line or '"<cell' in line or "<ipython-input" in line or '"main.py"' in line:
                if skipped:
                    kept.append(f"  [... {skipped} library frames ...]")
                    skipped = 0
                kept.extend(block)
            else:
                skipped += 1
            i = j
            continue
        if skipped:
            kept.append(f"  [... {skipped} library frames ...]")
            skipped = 0
        kept.append(line)
        i += 1
    return clip("\n".join(kept), limit)


@dataclass(frozen=True)
class Prompts:
    """The texts of the loop. Replace any field with your own (``str.format``
    placeholders as in the defaults)."""

    system_template: str = SYSTEM_TEMPLATE
    tool_instructions: str = TOOL_INSTRUCTIONS
    fence_instructions: str = FENCE_INSTRUCTIONS
    fence_example: str = ""  # a short worked example, shown when code is written in fences (profiles set one)
    feedback_ok: str = FEEDBACK_OK
    feedback_failed: str = FEEDBACK_FAILED
    repeated_code: str = REPEATED_CODE
    code_request: str = CODE_REQUEST
    unknown_tool: str = UNKNOWN_TOOL
    truncated_reply: str = TRUNCATED_REPLY
    verify_request: str = ""  # asked once before accepting an answer after working code; "" = never
    summary_request: str = SUMMARY_REQUEST
    failure_summary_request: str = FAILURE_SUMMARY_REQUEST
    libraries: Sequence[str] = DEFAULT_LIBRARIES
    standard_modules: Sequence[str] = STANDARD_MODULES
    max_output_chars: int = 4000
    preview_lines: int = 5  # first lines of each text input file shown to the model (0: none)
    preview_chars: int = 600
    max_traceback_chars: int = 2000

    def replace(self, **changes) -> Prompts:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The texts and numbers (a subclass's overridden methods are code, not data: not kept)."""
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prompts:
        return jsondata.from_json(cls, data, libraries=tuple, standard_modules=tuple)

    def system(
        self, limits: Limits, files: Sequence[InputFile] = (), stateful: bool = False, tools: bool = True
    ) -> str:
        """The system text. ``tools``: whether the model is offered the
        ``run_python`` tool; without it the text never names a tool."""
        file_list = ""
        if files:
            file_list = "\n- Input files, in the current working directory: " + ", ".join(f.name for f in files)
            previews = [self.preview(f) for f in files]
            file_list += "".join(p for p in previews if p)
        return self.system_template.format(
            how_to_run=self.tool_instructions if tools else self.fence_instructions,
            example=f"\n\n{self.fence_example.strip()}" if self.fence_example.strip() and not tools else "",
            standard_modules=", ".join(self.standard_modules),
            libraries=", ".join(self.libraries),
            timeout=limits.timeout_s,
            memory=_human_bytes(limits.memory_bytes),
            file_list=file_list,
            state_note=" whose variables persist between your code blocks" if stateful else "",
        )

    def preview(self, file: InputFile) -> str:
        """The first lines of a text input file, so the model writes code for
        the columns and format that are really there instead of guessing."""
        if self.preview_lines <= 0:
            return ""
        try:
            text = file.data[: self.preview_chars * 2].decode("utf-8")
        except UnicodeDecodeError:
            return ""  # binary (an image, a PDF): the name is all the model gets
        lines = text.splitlines()[: self.preview_lines]
        shown = clip("\n".join(lines), self.preview_chars, keep_tail=False)
        return (
            f"\n  First lines of {file.name}:\n  ```\n"
            + "\n".join(f"  {line}" for line in shown.splitlines())
            + "\n  ```"
        )

    def render_output(self, result: ExecutionResult) -> str:
        parts = []
        if result.stdout:
            note = " (truncated)" if result.stdout_truncated else ""
            parts.append(f"stdout{note}:\n{clip(result.stdout, self.max_output_chars)}")
        if result.results:
            parts.append("results:\n" + clip("\n".join(result.results), self.max_output_chars))
        stderr = result.stderr
        if result.traceback and stderr:
            stderr = stderr.replace(result.traceback, "").strip()  # the traceback is shown once, trimmed
        if stderr:
            note = " (truncated)" if result.stderr_truncated else ""
            parts.append(f"stderr{note}:\n{clip(stderr, self.max_output_chars)}")
        if result.artifacts:
            parts.append("files produced: " + ", ".join(a.name for a in result.artifacts))
        if not parts:
            parts.append("(no output)")
        return "\n".join(parts) + "\n"

    def feedback(self, result: ExecutionResult, retries_left: int) -> str:
        output = self.render_output(result)
        if result.ok:
            return self.feedback_ok.format(output=output).rstrip()
        if result.traceback:
            error = "error:\n" + trim_traceback(result.traceback, self.max_traceback_chars)
        else:
            error = f"error: {result.error_type or result.outcome.value}: {result.error_message or ''}".rstrip(": ")
        return self.feedback_failed.format(
            outcome=result.outcome.value, output=output, error=error, retries_left=retries_left
        ).rstrip()

    def repeated(self, attempt: int, result: ExecutionResult, retries_left: int) -> str:
        error = f"{result.error_type or result.outcome.value}: {result.error_message or ''}".rstrip(": ")
        return self.repeated_code.format(attempt=attempt, error=error, retries_left=retries_left)

    def unknown_tools(self, names: Sequence[str], retries_left: int, tools: bool) -> str:
        how = self.tool_instructions if tools else self.fence_instructions
        return self.unknown_tool.format(
            names=" or ".join(repr(n) for n in names), how_to_run=how, retries_left=retries_left
        )

    def verify(self, task: str) -> str:
        return self.verify_request.format(task=task)

    def truncated(self, retries_left: int) -> str:
        return self.truncated_reply.format(retries_left=retries_left)

    def request_code(self, files: Sequence[InputFile] = ()) -> str:
        reason = f" from the input files ({', '.join(f.name for f in files)})" if files else ""
        return self.code_request.format(reason=reason)

    def summary(self) -> str:
        return self.summary_request

    def failure_summary(self, failures: int) -> str:
        return self.failure_summary_request.format(failures=failures)
