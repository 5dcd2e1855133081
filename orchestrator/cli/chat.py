"""``codeloop chat``: a terminal conversation; each message runs the loop with
the whole history. Reads one message per line from stdin, so it can be driven
by a pipe as well as by a person."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Sequence
from typing import TextIO

from executors import InputFile

from ..images import InputFileTooLarge
from ..render import EventPrinter
from ..session import Session, SessionFileError
from . import EXIT_OK, UsageError
from ._common import add_prompt_options, close_model, resolve_run

HELP = """\
Type a message and press Enter. Commands:
  /file PATH   attach an input file to the next message (repeatable)
  /reset       forget the conversation, files and executor state
  /save PATH   save the conversation to a JSON file
  /load PATH   continue a saved conversation
  /help        this text
  /quit        leave (or Ctrl-D)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a model; each message runs the loop with the whole history",
        description="Chat with a model in the terminal.\n\n" + HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stream", action="store_true", help="stream the model's text as it arrives")
    p.add_argument("--file", action="append", default=[], metavar="PATH", help="input file (repeatable)")
    p.add_argument("--load", metavar="PATH", help="continue a saved conversation")
    add_prompt_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config, model, executor = resolve_run(args)
    session = Session(model, executor, config=config, stream_text=args.stream)
    return asyncio.run(chat(session, sys.stdin, sys.stdout, files=args.file, load=args.load, stream=args.stream))


async def chat(
    session: Session,
    stdin: TextIO,
    out: TextIO,
    *,
    files: Sequence[str] = (),
    load: str | None = None,
    stream: bool = False,
) -> int:
    """The REPL over a session. Returns the exit code; the executor is closed here."""
    pending = list(files)
    interactive = stdin.isatty()
    try:
        if load:
            try:
                await session.load(load)
            except SessionFileError as exc:
                raise UsageError(str(exc)) from None
        out.write(f"codeloop chat with {getattr(session.model, 'name', 'a model')}. /help for commands.\n")
        while True:
            if interactive:
                out.write("you> ")
                out.flush()
            line = stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not await command(session, line, out, pending):
                    break
                continue
            try:
                attached = [InputFile.from_path(p) for p in pending]
            except FileNotFoundError as exc:
                out.write(f"error: {exc}\n")
                pending.clear()
                continue
            pending.clear()
            printer = EventPrinter(out, stream_text=stream)
            try:
                async for event in session.stream(line, attached):
                    printer(event)
            except InputFileTooLarge as exc:  # nothing was sent; the message can be retried without it
                out.write(f"error: {exc}\n")
    finally:
        await session.executor.aclose()
        await close_model(session.model)
    return EXIT_OK


async def command(session: Session, line: str, out: TextIO, pending: list[str]) -> bool:
    """Run a /command; False means leave."""
    try:
        name, *rest = shlex.split(line)
    except ValueError as exc:
        out.write(f"error: {exc}\n")
        return True
    arg = " ".join(rest)
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        out.write(HELP + "\n")
    elif name == "/reset":
        await session.reset()
        out.write("conversation cleared\n")
    elif name in ("/save", "/load", "/file") and not arg:
        out.write(f"error: {name} needs a PATH\n")
    elif name == "/save":
        try:
            path = session.save(arg)
        except OSError as exc:
            out.write(f"error: cannot save to {arg}: {exc.strerror}\n")
        else:
            out.write(f"saved {len(session.conversation.messages)} messages to {path}\n")
    elif name == "/load":
        try:
            await session.load(arg)
        except SessionFileError as exc:
            out.write(f"error: {exc}\n")
        else:
            out.write(f"loaded {len(session.conversation.messages)} messages from {arg}\n")
    elif name == "/file":
        pending.append(arg)
        out.write(f"{arg} will go with the next message\n")
    else:
        out.write(f"unknown command {name}; /help lists the commands\n")
    return True
