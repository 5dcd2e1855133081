"""``codeloop run``: one prompt through the loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from executors import InputFile

from .. import events as ev
from ..images import InputFileTooLarge
from ..loop import Orchestrator
from ..render import EventPrinter
from ..types import RunStatus
from . import EXIT_FAILED, EXIT_OK, EXIT_UNVERIFIED, UsageError
from ._common import add_prompt_options, close_model, resolve_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one prompt", description="Run one prompt through the loop.")
    p.add_argument("prompt", nargs="?", help="the prompt text")
    p.add_argument("-f", "--prompt-file", help="read the prompt from this file")
    p.add_argument("--file", action="append", default=[], metavar="PATH", help="input file for the code (repeatable)")
    p.add_argument("--json", action="store_true", help="print the RunResult as JSON instead of the transcript")
    p.add_argument("--stream", action="store_true", help="stream the model's text as it arrives")
    p.add_argument("--save-artifacts", metavar="DIR", help="write files the code produced into DIR")
    add_prompt_options(p)
    p.set_defaults(handler=handle)


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt and args.prompt_file:
        raise UsageError("give the prompt as an argument or with -f, not both")
    if args.prompt_file:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read prompt file {args.prompt_file}: {exc.strerror}") from exc
    elif args.prompt:
        text = args.prompt
    else:
        raise UsageError("no prompt: pass it as an argument or with -f FILE")
    if not text.strip():
        raise UsageError("the prompt is empty")
    return text


def read_files(paths: list[str]) -> list[InputFile]:
    try:
        return [InputFile.from_path(p) for p in paths]
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc


def handle(args: argparse.Namespace) -> int:
    prompt = read_prompt(args)
    files = read_files(args.file)
    config, model, executor = resolve_run(args)
    return asyncio.run(_run(args, prompt, files, model, executor, config))


async def _run(args, prompt, files, model, executor, config) -> int:
    orch = Orchestrator(model, executor, config=config, stream_text=args.stream)
    printer = None if args.json else EventPrinter(sys.stdout, stream_text=args.stream)
    result = None
    try:
        async for event in orch.stream(prompt, files=files):
            if printer:
                printer(event)
            if isinstance(event, ev.Done):
                result = event.result
    except InputFileTooLarge as exc:  # before any model call: a usage error, not a failed run
        raise UsageError(str(exc)) from None
    finally:
        await executor.aclose()
        await close_model(model)
    assert result is not None  # the stream ends with Done
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    if args.save_artifacts:
        for artifact in result.artifacts:
            artifact.save(args.save_artifacts)
    return exit_code(result.status)


def exit_code(status: RunStatus) -> int:
    """0 solved or answered without needing code, 1 failed, 3 unverified."""
    return {RunStatus.FAILED: EXIT_FAILED, RunStatus.UNVERIFIED: EXIT_UNVERIFIED}.get(status, EXIT_OK)
