"""Options and resolution shared by the subcommands that run prompts."""

from __future__ import annotations

import argparse
import os
import sys

from executors import DEFAULT_EXECUTOR, Limits, UnknownExecutorError, available_executors, get_executor
from executors.base import Executor

from ..config import GenerationOptions, LoopConfig
from ..images import ImageSettings
from ..models import Model, ModelError, RecordingModel, UnknownModelError, default_model, get_model
from . import UsageError
from ._local import add_local_options, build_local_model


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model string, e.g. gemini:gemini-2.5-flash or replay:PATH")
    parser.add_argument("--executor", help=f"where code runs: {', '.join(available_executors())}")
    parser.add_argument("--max-retries", type=int, default=5, help="retries after failed executions (default 5)")
    parser.add_argument("--max-steps", type=int, default=10, help="bound on executions per run (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="wall-clock seconds per execution (default 30)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory limit per execution (default 2048)")
    parser.add_argument("--record", metavar="PATH", help="append the model's turns to this cassette (JSONL)")
    parser.add_argument("--gateway-url", help="jupyter-remote: Kernel Gateway URL (default: $CODELOOP_GATEWAY_URL)")
    parser.add_argument(
        "--gateway-token", help="jupyter-remote: gateway token (prefer $CODELOOP_GATEWAY_TOKEN: flags show in ps)"
    )
    parser.add_argument(
        "--tools",
        choices=("auto", "on", "off"),
        default="auto",
        help="offer the run_python tool (on), ask for fenced code (off), or follow what the model "
        "does (auto, the default)",
    )
    parser.add_argument(
        "--require-code",
        choices=("auto", "always", "never"),
        default="auto",
        help="ask once for code when the model answers a task that needs computing without "
        "running any (auto: the prompt has files or asks to compute; default)",
    )
    parser.add_argument("--temperature", type=float, help="sampling temperature (local models: 0 by default)")
    parser.add_argument("--max-tokens", type=int, help="most tokens a model reply may have")
    add_local_options(parser)


def announce_default_model() -> str:
    """The default model's spec, saying on stderr which one and why."""
    chosen = default_model(os.environ)
    print(f"codeloop: using {chosen.spec} ({chosen.reason})", file=sys.stderr)
    return chosen.spec


def resolve_model(args: argparse.Namespace) -> Model:
    spec = args.model or announce_default_model()
    prefix, _, arg = spec.partition(":")
    try:
        options = GenerationOptions(
            temperature=getattr(args, "temperature", None), max_tokens=getattr(args, "max_tokens", None)
        )
        model = build_local_model(arg, args) if prefix == "local" and arg else get_model(spec, options)
    except (UnknownModelError, ValueError, FileNotFoundError, ModelError) as exc:
        raise UsageError(str(exc)) from exc
    if getattr(args, "record", None):
        model = RecordingModel(model, args.record)
    return model


def resolve_executor(args: argparse.Namespace) -> Executor:
    options = {}
    if args.executor == "jupyter-remote":
        if getattr(args, "gateway_url", None):
            options["gateway_url"] = args.gateway_url
        if getattr(args, "gateway_token", None):
            options["token"] = args.gateway_token
    try:
        return get_executor(args.executor, **options)
    except (UnknownExecutorError, ValueError) as exc:  # ValueError: e.g. no gateway URL
        raise UsageError(str(exc)) from exc


def add_image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--see-figures",
        choices=("auto", "on", "off"),
        default="auto",
        help="show the figures the code drew to the model with its feedback (auto: when the "
        "model takes images; default)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=ImageSettings.max_input_image_bytes,
        help="largest input image shown to a model, in bytes; a larger one is an error "
        f"(default {ImageSettings.max_input_image_bytes})",
    )


def image_settings(args: argparse.Namespace) -> ImageSettings:
    try:
        return ImageSettings(see_figures=args.see_figures, max_input_image_bytes=args.max_image_bytes)
    except ValueError as exc:
        raise UsageError(str(exc).replace("ImageSettings.max_input_image_bytes", "--max-image-bytes")) from None


def limits_from(args: argparse.Namespace) -> Limits:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.memory_mb <= 0:
        raise UsageError(f"--memory-mb must be positive, got {args.memory_mb}")
    return Limits(timeout_s=args.timeout, memory_bytes=args.memory_mb * 1024**2)


def loop_config(args: argparse.Namespace) -> LoopConfig:
    """The run's :class:`LoopConfig` from the options of :func:`add_run_options`.
    Executor options given as flags (the gateway's URL and token) stay out of
    it: the config may be stored, a token must not be."""
    if args.max_retries < 0:
        raise UsageError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    try:
        generation = GenerationOptions(
            temperature=getattr(args, "temperature", None), max_tokens=getattr(args, "max_tokens", None)
        )
        return LoopConfig(
            max_retries=args.max_retries,
            max_steps=args.max_steps,
            limits=limits_from(args),
            tools=getattr(args, "tools", "auto"),
            require_code=getattr(args, "require_code", "auto"),
            executor=args.executor or DEFAULT_EXECUTOR,
            generation=generation,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    """The options of the subcommands that run prompts here and now (run, chat): the run's options
    and the images'. A batch stores its images in its LoopConfig, so it takes only the run's."""
    add_run_options(parser)
    add_image_options(parser)


def resolve_run(args: argparse.Namespace) -> tuple[LoopConfig, Model, Executor]:
    """The config, model and executor of :func:`add_prompt_options`' options, checked in that
    order (a bad flag is reported before a model is built)."""
    config = loop_config(args).replace(images=image_settings(args))
    return config, resolve_model(args), resolve_executor(args)


async def close_model(model: Model) -> None:
    """Close a model that holds resources (a client, a local server)."""
    aclose = getattr(model, "aclose", None)
    if aclose is not None:
        await aclose()
