"""Options and resolution shared by the subcommands that run prompts."""

from __future__ import annotations

import argparse
import os

from executors import Limits, UnknownExecutorError, available_executors, get_executor
from executors.base import Executor

from ..models import Model, ModelError, RecordingModel, UnknownModelError, default_model_spec, get_model
from . import UsageError

NO_MODEL_HELP = (
    "no model chosen. Pass --model, for example:\n"
    "  --model gemini:gemini-2.5-flash          (set GEMINI_API_KEY or GOOGLE_API_KEY)\n"
    "  --model openai:MODEL@http://127.0.0.1:11434/v1   (any OpenAI-compatible server)\n"
    "  --model replay:examples/cassette.jsonl   (recorded turns, offline)\n"
    "With GEMINI_API_KEY set, Gemini is used by default. `make demo` runs offline with no key."
)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model string, e.g. gemini:gemini-2.5-flash or replay:PATH")
    parser.add_argument("--executor", help=f"where code runs: {', '.join(available_executors())}")
    parser.add_argument("--max-retries", type=int, default=5, help="retries after failed executions (default 5)")
    parser.add_argument("--max-steps", type=int, default=10, help="bound on executions per run (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="wall-clock seconds per execution (default 30)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory limit per execution (default 2048)")
    parser.add_argument("--record", metavar="PATH", help="append the model's turns to this cassette (JSONL)")


def resolve_model(args: argparse.Namespace) -> Model:
    spec = args.model or default_model_spec(os.environ)
    if not spec:
        raise UsageError(NO_MODEL_HELP)
    try:
        model = get_model(spec)
    except (UnknownModelError, ValueError, FileNotFoundError, ModelError) as exc:
        raise UsageError(str(exc)) from exc
    if getattr(args, "record", None):
        model = RecordingModel(model, args.record)
    return model


def resolve_executor(args: argparse.Namespace) -> Executor:
    try:
        return get_executor(args.executor)
    except UnknownExecutorError as exc:
        raise UsageError(str(exc)) from exc


def limits_from(args: argparse.Namespace) -> Limits:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.memory_mb <= 0:
        raise UsageError(f"--memory-mb must be positive, got {args.memory_mb}")
    return Limits(timeout_s=args.timeout, memory_bytes=args.memory_mb * 1024**2)


def orchestrator_settings(args: argparse.Namespace) -> dict:
    if args.max_retries < 0:
        raise UsageError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    return {"max_retries": args.max_retries, "max_steps": args.max_steps, "limits": limits_from(args)}
