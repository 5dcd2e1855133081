"""Turn what a child process did into an :class:`ExecutionResult`.

The error type, message and traceback come from the report the harness wrote;
the outcome is decided from facts the parent observed (deadline, flood,
signal, exit status), in that order of precedence.
"""

from __future__ import annotations

import signal as signal_module

from .base import Artifact, ExecutionResult, Isolation, Limits, Outcome
from .inside.harness import decode_report
from .process import ProcessOutcome

MEMORY_ERRORS = {"MemoryError"}


def interpret(
    proc: ProcessOutcome,
    *,
    limits: Limits,
    executor: str,
    isolation: Isolation,
    artifacts: list[Artifact],
    baseline_memory_bytes: int = 0,
) -> ExecutionResult:
    if proc.spawn_error:
        return ExecutionResult.sandbox_error(
            f"could not start the child: {proc.spawn_error}", executor=executor, isolation=isolation
        )
    # Missing, cut short or forged reports are ignored: trust only what we saw.
    report = decode_report(proc.report) or {}
    outcome, error_type, error_message = _outcome(proc, report, limits)
    peak = proc.peak_memory_bytes
    if peak is not None and baseline_memory_bytes:
        peak = max(0, peak - baseline_memory_bytes)
    if (
        # The kernel's OOM killer sends SIGKILL; a SIGSEGV is a crash whatever the memory use.
        outcome is Outcome.KILLED
        and proc.signal == signal_module.SIGKILL
        and peak is not None
        and limits.memory_bytes
        and (proc.peak_memory_bytes or 0) >= 0.9 * limits.memory_bytes
    ):
        outcome = Outcome.MEMORY_EXCEEDED
    return ExecutionResult(
        outcome=outcome,
        stdout=proc.stdout.text(),
        stderr=proc.stderr.text(),
        error_type=error_type,
        error_message=error_message,
        traceback=report.get("traceback"),
        exit_code=proc.returncode,
        signal=proc.signal,
        duration_s=proc.duration_s,
        cpu_time_s=proc.cpu_time_s,
        peak_memory_bytes=peak,
        artifacts=artifacts,
        stdout_truncated=proc.stdout.truncated,
        stderr_truncated=proc.stderr.truncated,
        executor=executor,
        isolation=isolation,
    )


def _outcome(proc: ProcessOutcome, report: dict, limits: Limits) -> tuple[Outcome, str | None, str | None]:
    """The outcome from what the parent observed, in order of precedence: deadline, flood,
    memory error, signal, exit status; with the error type and message to report."""
    error_type, error_message = report.get("error_type"), report.get("error_message")
    if proc.timed_out:
        return (
            Outcome.DEADLINE_EXCEEDED,
            error_type or "TimeoutError",
            (f"execution exceeded the {limits.timeout_s:g} s deadline and was stopped"),
        )
    if proc.output_exceeded:
        return (
            Outcome.OUTPUT_LIMIT,
            "OutputLimitExceeded",
            (f"output exceeded {limits.output_hard_bytes} bytes and the run was stopped"),
        )
    if error_type in MEMORY_ERRORS or report.get("memory_error") is True:
        return Outcome.MEMORY_EXCEEDED, error_type, error_message
    if proc.signal is not None:
        if proc.signal == signal_module.SIGXCPU:
            return Outcome.DEADLINE_EXCEEDED, "TimeoutError", "CPU time limit exceeded"
        if proc.signal == signal_module.SIGXFSZ:
            return Outcome.FAILED, "OSError", f"file size limit ({limits.file_bytes} bytes) exceeded"
        return (
            Outcome.KILLED,
            error_type or "Killed",
            (error_message or f"the process was killed by {_signal_name(proc.signal)}"),
        )
    if error_type or proc.returncode not in (0, None):
        if not error_type:
            return Outcome.FAILED, "ExitError", f"the process exited with status {proc.returncode}"
        return Outcome.FAILED, error_type, error_message
    # Also exit 0 without a report: the code cut the harness short (os._exit(0)).
    return Outcome.OK, error_type, error_message


def _signal_name(sig: int) -> str:
    try:
        return signal_module.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
