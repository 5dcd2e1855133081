"""``codeloop demo``: the example prompts, offline, with live execution.

The model's turns are replayed from a cassette (no key, no network); the code
in them runs for real in the chosen executor, so every output shown is live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from executors import InputFile, Limits

from ..loop import Orchestrator
from ..models import ReplayModel
from ..render import EventPrinter
from ..types import RunStatus
from . import EXIT_FAILED, EXIT_OK, UsageError
from ._common import resolve_executor

RULE = "═" * 72


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the example prompts offline (replayed model, live execution)")
    p.add_argument("--prompts", default="examples/prompts.jsonl", help="JSONL of {id, prompt, files}")
    p.add_argument("--cassette", default="examples/cassette.jsonl", help="recorded model turns")
    p.add_argument("--executor", help="where the code runs (default: the default executor)")
    p.set_defaults(handler=handle)


def load_prompts(path: Path) -> list[dict]:
    """The prompts, each with its input files read (as ``inputs``), so that a
    missing file is reported with its line before anything runs."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    items = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            item["prompt"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{path}:{lineno}: expected a JSON object with a 'prompt' field") from None
        try:
            item["inputs"] = [InputFile.from_path(path.parent / f) for f in item.get("files", [])]
        except FileNotFoundError as exc:
            raise UsageError(f"{path}:{lineno}: {exc}") from None
        items.append(item)
    return items


def handle(args: argparse.Namespace) -> int:
    items = load_prompts(Path(args.prompts))
    try:
        model = ReplayModel(args.cassette)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    executor = resolve_executor(args)
    return asyncio.run(_demo(items, model, executor))


async def _demo(items: list[dict], model: ReplayModel, executor) -> int:
    orch = Orchestrator(model, executor, limits=Limits(timeout_s=30))
    printer = EventPrinter(sys.stdout)
    failed = 0
    try:
        for item in items:
            print(f"{RULE}\n▶ {item.get('id', '')}: {item['prompt']}\n{RULE}")
            async for event in orch.stream(item["prompt"], files=item["inputs"]):
                printer(event)
            print()
            failed += event.result.status is RunStatus.FAILED  # the last event is Done
    finally:
        await executor.aclose()
    print(f"{len(items)} prompts, {len(items) - failed} solved or answered, {failed} failed "
          f"(model replayed from the cassette; executor: {executor.name})")
    return EXIT_FAILED if failed else EXIT_OK
