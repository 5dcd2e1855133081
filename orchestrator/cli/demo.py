"""``codeloop demo``: the example prompts with a real model, executed live.

By default a local model answers (downloaded on first use, run by a
llama.cpp server that codeloop starts and stops). ``--replay`` plays the
model's turns back from a cassette instead (no download, a few seconds);
either way the code runs for real in the chosen executor, so every output
shown is live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from executors import InputFile, Limits

from ..events import Done
from ..loop import Orchestrator
from ..models import Model, ReplayModel
from ..models.registry import DEFAULT_LOCAL_MODEL
from ..render import EventPrinter
from ..types import RunResult, RunStatus, Usage
from . import EXIT_FAILED, EXIT_OK, UsageError
from ._common import close_model, resolve_executor, resolve_model
from ._local import add_local_options

RULE = "═" * 72


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the example prompts with a local model (or --replay a cassette)")
    p.add_argument("--prompts", default="examples/prompts.jsonl", help="JSONL of {id, prompt, files}")
    p.add_argument(
        "--model",
        default=f"local:{DEFAULT_LOCAL_MODEL}",
        help=f"the model that answers (default local:{DEFAULT_LOCAL_MODEL}, downloaded on first use)",
    )
    p.add_argument(
        "--replay",
        nargs="?",
        const="examples/cassette.jsonl",
        metavar="CASSETTE",
        help="replay recorded model turns instead (default cassette: examples/cassette.jsonl)",
    )
    p.add_argument("--record", metavar="PATH", help="append the model's turns to this cassette (JSONL)")
    p.add_argument("--executor", help="where the code runs (default: the default executor)")
    p.add_argument("--temperature", type=float, help="sampling temperature (local models: 0 by default)")
    p.add_argument("--max-tokens", type=int, help="most tokens a model reply may have")
    p.add_argument("--tools", choices=("auto", "on", "off"), default="auto", help="tool mode (default auto)")
    add_local_options(p)
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
    if args.replay:
        try:
            model: Model = ReplayModel(args.replay)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    else:
        model = resolve_model(args)
    executor = resolve_executor(args)
    return asyncio.run(_demo(items, model, executor, tools=args.tools))


async def _demo(items: list[dict], model, executor, *, tools: str = "auto") -> int:
    orch = Orchestrator(model, executor, limits=Limits(timeout_s=30), tools=tools)
    printer = EventPrinter(sys.stdout)
    results: list[RunResult] = []
    started = time.perf_counter()
    try:
        for item in items:
            print(f"{RULE}\n▶ {item.get('id', '')}: {item['prompt']}\n{RULE}")
            async for event in orch.stream(item["prompt"], files=item["inputs"]):
                printer(event)
            print()
            assert isinstance(event, Done) and event.result is not None  # the loop ends every run with Done
            results.append(event.result)
    finally:
        await close_model(model)
        await executor.aclose()
    print(
        closing_line(results, model_name=model.name, executor_name=executor.name, wall_s=time.perf_counter() - started)
    )
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def closing_line(results: list[RunResult], *, model_name: str, executor_name: str, wall_s: float) -> str:
    """One line: how the prompts ended, and the model's tokens and speed."""
    counts = {status: sum(r.status is status for r in results) for status in RunStatus}
    usage = sum((r.usage for r in results), Usage())
    model_s = sum(r.model_time_s for r in results)
    speed = f"{usage.output_tokens / model_s:.1f} generated tokens/s" if model_s > 0 else "no model time"
    ended = ", ".join(f"{n} {status.value}" for status, n in counts.items() if n)
    return (
        f"{len(results)} prompts: {ended}. Model {model_name}: {usage.input_tokens} prompt + "
        f"{usage.output_tokens} generated tokens, {speed}; executor {executor_name}; {wall_s:.1f} s in all."
    )
