"""What the loop says to the model: the system instruction, the feedback after
each execution, and the request for a final summary. Every piece can be
replaced by passing a different :class:`Prompts` to the orchestrator."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from executors.base import ExecutionResult, InputFile, Limits

DEFAULT_LIBRARIES = (
    "numpy", "pandas", "matplotlib", "sympy", "the Python standard library",
)

SYSTEM_TEMPLATE = """\
You can run Python code. To run code, call the `run_python` tool, or write one \
fenced block labelled ```python. The code runs in a fresh, isolated Python 3 \
process{state_note}, and its result (stdout, stderr, any error) comes back to you.

The environment:
- Libraries: {libraries}. There is no network access and nothing can be installed.
- Limits: {timeout:g} s of wall time and {memory} of memory per execution.
- Files: input files are in the current working directory{file_list}. Files you \
write there are returned to the user; matplotlib figures are captured as PNG \
automatically (no need to call plt.show()).
- Print every result you need with print(): only printed output comes back.

Work step by step: write code, read its output, and fix the code if it fails. \
When you have the answer, reply with a short final summary in plain text, with no \
code block, stating the result."""

FEEDBACK_OK = "The code ran successfully.\n{output}"
FEEDBACK_FAILED = (
    "The code failed ({outcome}).\n{output}{error}\n"
    "Fix the code and run it again ({retries_left} retries left)."
)
SUMMARY_REQUEST = (
    "Now give your final answer: a short summary in plain text of the result, "
    "without any code block."
)
FAILURE_SUMMARY_REQUEST = (
    "The code failed {failures} times and there are no retries left. Do not write more code. "
    "Give a short final summary in plain text: what you tried, what failed and why, "
    "and any partial result."
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
    feedback_ok: str = FEEDBACK_OK
    feedback_failed: str = FEEDBACK_FAILED
    summary_request: str = SUMMARY_REQUEST
    failure_summary_request: str = FAILURE_SUMMARY_REQUEST
    libraries: Sequence[str] = DEFAULT_LIBRARIES
    max_output_chars: int = 4000
    max_traceback_chars: int = 2000

    def replace(self, **changes) -> "Prompts":
        return replace(self, **changes)

    def system(self, limits: Limits, files: Sequence[InputFile] = (), stateful: bool = False) -> str:
        file_list = ""
        if files:
            file_list = ": " + ", ".join(f.name for f in files)
        return self.system_template.format(
            libraries=", ".join(self.libraries),
            timeout=limits.timeout_s,
            memory=_human_bytes(limits.memory_bytes),
            file_list=file_list,
            state_note=" whose variables persist between your code blocks" if stateful else "",
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

    def summary(self) -> str:
        return self.summary_request

    def failure_summary(self, failures: int) -> str:
        return self.failure_summary_request.format(failures=failures)
