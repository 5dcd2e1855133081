"""Progress for model pulls: a rich bar on an interactive stderr, nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

# report(stage, done, total). Stages: "download" counts chunk packages, "assemble" and "verify" count bytes.
Progress = Callable[[str, int, int], None]
COUNTED_IN_PACKAGES = {"download"}


def no_progress(stage: str, done: int, total: int) -> None:
    """The reporter used when progress is off."""


def _detail(stage: str, done: int, total: int) -> str:
    if stage in COUNTED_IN_PACKAGES:
        return f"{done}/{total} packages"
    return f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB"


@contextmanager
def reporter(setting: bool | Progress, title: str, stream: TextIO | None = None) -> Iterator[Progress]:
    """``setting`` is a callable (used as is), True (a bar when ``stream`` is a terminal) or False."""
    if callable(setting):
        yield setting
        return
    stream = stream or sys.stderr
    if not setting or not stream.isatty():
        yield no_progress
        return
    from rich.console import Console
    from rich.progress import BarColumn, TaskID, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=Console(file=stream)) as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{title}: {stage}", total=total, detail="")
            bar.update(tasks[stage], completed=done, total=total, detail=_detail(stage, done, total))

        yield report
