"""The batch progress bar: done/total, solved, failed, retries, 429s, rate and ETA.

Quiet unless the console is a terminal, so logs and pipes stay clean. The
counters are kept either way; the CLI prints them as a one-line summary.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..types import RunResult, RunStatus


class BatchProgress:
    def __init__(self, *, enabled: bool | None = None, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.total = 0
        self.done = 0  # finished in this session, any outcome
        self.solved = 0
        self.answered = 0  # answered without code
        self.failed = 0  # the code never worked
        self.errors = 0  # the run could not complete (model errors): re-run on resume
        self.retries = 0  # failed executions before the last, summed
        self._rate_limited_live = 0  # counted as they happen (local engine)
        self._rate_limited_finished = 0  # counted from finished items (every engine, including Ray)
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, *, total: int, already_done: int) -> None:
        self.total = total
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("batch", total=total, completed=already_done, stats=self._stats(), rate="")

    def _stats(self) -> str:
        parts = [
            f"[green]solved {self.solved}",
            f"[red]failed {self.failed + self.errors}",
            f"[yellow]retries {self.retries}",
        ]
        if self.answered:
            parts.insert(1, f"answered {self.answered}")
        if self.rate_limited:
            parts.append(f"[magenta]429s {self.rate_limited}")
        return " ".join(parts) + "[/]"

    @property
    def rate_limited(self) -> int:
        # Live counts include in-flight items, so they are never below the finished items' sum.
        return max(self._rate_limited_live, self._rate_limited_finished)

    def item_finished(self, status: str, result: RunResult, rate_limited: int = 0) -> None:
        self.done += 1
        self._rate_limited_finished += rate_limited
        self.retries += result.retries
        if status == "error":
            self.errors += 1
        elif result.status is RunStatus.SOLVED:
            self.solved += 1
        elif result.status is RunStatus.ANSWERED_WITHOUT_CODE:
            self.answered += 1
        else:
            self.failed += 1
        if self._progress is not None:
            task = self._progress.tasks[0]
            speed = task.speed
            self._progress.update(self._task, advance=1, stats=self._stats(), rate=f"{speed:.1f}/s" if speed else "")

    def rate_limited_call(self) -> None:
        self._rate_limited_live += 1
        if self._progress is not None:
            self._progress.update(self._task, stats=self._stats())

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def summary(self) -> str:
        return (
            f"{self.done} run: {self.solved} solved, {self.answered} answered without code, "
            f"{self.failed} failed, {self.errors} errors (re-run on --resume), {self.retries} retries, "
            f"{self.rate_limited} rate-limited calls"
        )
