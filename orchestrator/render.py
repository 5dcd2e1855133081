"""Plain-text rendering of runs for the terminal (run, demo, chat)."""

from __future__ import annotations

from typing import TextIO

from . import events as ev
from .types import RunResult, RunStatus


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines()) or prefix + "(none)"


class EventPrinter:
    """Prints a run as it happens: each attempt's code, its live output, the summary."""

    def __init__(self, out: TextIO, *, show_code: bool = True, stream_text: bool = False) -> None:
        self.out = out
        self.show_code = show_code
        self.stream_text = stream_text
        self._streamed = False

    def __call__(self, event: ev.Event) -> None:
        w = self.out.write
        if isinstance(event, ev.TextDelta) and self.stream_text:
            w(event.text)
            self._streamed = True
        elif isinstance(event, ev.ModelResponse) and self._streamed:
            w("\n")
            self._streamed = False
        elif isinstance(event, ev.ExecutionStarted) and self.show_code:
            w(f"── code (attempt {event.step}) ──\n{_indent(event.code)}\n")
        elif isinstance(event, ev.ExecutionFinished) and event.attempt is not None:
            attempt = event.attempt
            r = attempt.result
            if attempt.remote and self.show_code:
                w(f"── code (attempt {event.step}, run by the model provider) ──\n{_indent(attempt.code)}\n")
            where = f", {r.executor}/{r.isolation}" if r.executor else ""
            w(f"── output: {r.outcome.value} in {r.duration_s * 1000:.0f} ms{where} ──\n")
            if r.stdout:
                w(_indent(r.stdout) + ("\n  [stdout truncated]" if r.stdout_truncated else "") + "\n")
            if not r.ok:
                w(_indent(f"{r.error_type}: {r.error_message}") + "\n")
            for a in r.artifacts:
                w(f"  file: {a.name} ({a.size} bytes, {a.mime_type})\n")
        elif isinstance(event, ev.Retry):
            w(f"── retry {event.failures} ({event.retries_left} left) ──\n")
        elif isinstance(event, ev.Done) and event.result is not None:
            w(render_footer(event.result))
        self.out.flush()


def render_footer(result: RunResult) -> str:
    # A run that failed or never ran code says so before the model's words,
    # which may sound more certain than the run was.
    verdict = {
        RunStatus.FAILED: "FAILED: no execution produced a verified result; the model's summary follows",
        RunStatus.UNVERIFIED: "UNVERIFIED: the model answered without running code; nothing below was computed",
    }.get(result.status)
    lines = [f"── {verdict} ──"] if verdict else []
    lines += [f"── summary ({result.status.value}) ──", _indent(result.summary or "(no summary)")]
    if result.error:
        lines.append(f"  error: {result.error}")
    u = result.usage
    lines.append(
        f"  {len(result.attempts)} execution(s), {u.requests} model call(s), "
        f"{u.total_tokens} tokens, {result.wall_time_s:.2f} s"
    )
    return "\n".join(lines) + "\n"
