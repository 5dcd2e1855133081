"""``codeloop batch PROMPTS -o RUN_DIR``: run many prompts into a resumable store."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ..config import LoopConfig
from . import EXIT_FAILED, EXIT_OK, UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="run a file or directory of prompts concurrently into a resumable store",
        description="Run prompts from a JSONL, CSV or text file, or a directory of .txt/.md files, into "
        "RUN_DIR/runs.db. The input is validated before anything runs. Exit code 0 when every "
        "item finished, 1 when some ended with an error (re-run them with --resume), 130 on Ctrl-C.",
    )
    parser.add_argument("prompts", nargs="?", help="prompts file or directory (optional with --resume)")
    parser.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run directory for the store")
    parser.add_argument("--model", help="model string, e.g. gemini:gemini-2.5-flash (on --resume: the stored one)")
    parser.add_argument(
        "--executor", help="executor name (default: sandbox, the isolated one; on --resume: the stored one)"
    )
    parser.add_argument(
        "--executor-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="executor constructor option; VALUE is parsed as JSON when it can be (repeatable)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="items in flight, so also model calls (default 8)")
    parser.add_argument(
        "--execution-concurrency", type=int, default=None, help="concurrent executions (default: --concurrency)"
    )
    parser.add_argument("--max-retries", type=int, default=None, help="failed executions fed back per item (default 5)")
    parser.add_argument("--max-steps", type=int, default=None, help="bound on executions per item (default 10)")
    parser.add_argument(
        "--tools",
        choices=("auto", "on", "off"),
        default=None,
        help="run_python tool (on), fenced code (off) or follow the model (auto, default)",
    )
    parser.add_argument(
        "--require-code",
        choices=("auto", "always", "never"),
        default=None,
        help="ask once for code when a task needing it was answered without (default auto)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="wall-clock seconds per execution (default 30)")
    parser.add_argument("--memory-mb", type=int, default=None, help="memory limit per execution (default 2048)")
    parser.add_argument("--resume", action="store_true", help="continue the batch in RUN_DIR")
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --resume: run with the settings given where they differ from the stored ones "
        "(without it such a resume is refused; settings not given are the stored ones)",
    )
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help="where items run (default local)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--ray-workers", type=int, default=None, help="Ray actors to spread items over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    parser.add_argument(
        "--durability",
        choices=("normal", "full"),
        default="normal",
        help="'full' also survives power loss (an fsync per result); 'normal' survives any crash",
    )
    parser.set_defaults(handler=run)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--executor-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def resolve_config(args: argparse.Namespace, stored: LoopConfig | None) -> LoopConfig:
    """The batch's LoopConfig: on --resume the stored one, with the flags given
    applied over it (run_batch then refuses values that differ from the stored
    ones unless --force); for a new batch the defaults with the flags."""
    from executors import Limits

    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.memory_mb is not None and args.memory_mb <= 0:
        raise UsageError(f"--memory-mb must be positive, got {args.memory_mb}")
    base = stored or LoopConfig()
    changes: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("executor", "max_retries", "max_steps", "tools", "require_code")
        if getattr(args, name) is not None
    }
    if args.executor_option:
        changes["executor_options"] = parse_options(args.executor_option)
    limit_changes = {
        **({"timeout_s": args.timeout} if args.timeout is not None else {}),
        **({"memory_bytes": args.memory_mb * 1024**2} if args.memory_mb is not None else {}),
    }
    if limit_changes:
        changes["limits"] = (base.limits or Limits()).replace(**limit_changes)
    try:
        return base.with_settings(changes)
    except ValueError as exc:  # e.g. --max-retries -1
        raise UsageError(str(exc)) from exc


def resolve_model_spec(args: argparse.Namespace, stored_model: str | None) -> str:
    from ..models import UnknownModelError, get_model
    from ._common import announce_default_model

    model = args.model or stored_model or announce_default_model()
    try:
        get_model(model)  # a bad model string is a usage error now, not an error per item later
    except (UnknownModelError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    return model


def run(args: argparse.Namespace) -> int:
    from executors import UnknownExecutorError

    from ..batch import BatchInputError, BatchProgress, BatchSettings, StoreError, run_batch
    from ..batch.ray_engine import RayUnavailableError
    from ..batch.store import DB_NAME, BatchStore

    if args.prompts is None and not args.resume:
        raise UsageError("give a prompts file or directory (or --resume an existing RUN_DIR)")
    if args.concurrency < 1 or (args.execution_concurrency is not None and args.execution_concurrency < 1):
        raise UsageError("--concurrency and --execution-concurrency must be at least 1")
    stored = None
    if args.resume and (Path(args.output) / DB_NAME).exists():
        with BatchStore(args.output, create=False) as store:
            data = store.settings()
        stored = BatchSettings.from_json(data) if data else None
    model = resolve_model_spec(args, stored.model if stored else None)
    config = resolve_config(args, stored.config if stored else None)
    progress = BatchProgress(enabled=False if args.no_progress else None)

    async def drive() -> None:
        async for _ in run_batch(
            args.prompts,
            run_dir=args.output,
            concurrency=args.concurrency,
            execution_concurrency=args.execution_concurrency,
            resume=args.resume,
            force=args.force,
            engine=args.engine,
            ray_address=args.ray_address,
            ray_workers=args.ray_workers,
            progress=progress,
            durability=args.durability,
            model=model,
            config=config,
        ):
            pass

    try:
        asyncio.run(drive())
    except (BatchInputError, StoreError, UnknownExecutorError, RayUnavailableError) as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        print(
            f"codeloop batch: interrupted; {progress.summary()}; continue with: "
            f"codeloop batch -o {args.output} --resume",
            file=sys.stderr,
        )
        return 130
    print(f"codeloop batch: {progress.summary()}; results in {args.output}", file=sys.stderr)
    with BatchStore(args.output, create=False) as store:
        counts = store.counts()
    return EXIT_FAILED if counts["error"] or counts["pending"] else EXIT_OK
