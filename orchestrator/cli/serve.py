"""``codeloop serve``: Gemini's API (generateContent, streaming, countTokens,
models), with code execution done by codeloop's loop, for any backend model."""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys

from ..config import LoopConfig
from . import EXIT_OK, UsageError
from ._common import add_run_options, loop_config, resolve_executor, resolve_model

KEY_VARIABLE = "CODELOOP_SERVE_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        conflict_handler="resolve",  # --model is redefined below: one per backend
        help="serve a Gemini-compatible API whose code execution runs here, for any model",
        description="Serve POST /v1beta/models/{model}:generateContent (and :streamGenerateContent, "
        ":countTokens) and GET /v1beta/models. A request whose tools include codeExecution runs "
        "codeloop's loop with the backend model; other requests are a plain chat with it.",
    )
    add_run_options(p)
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[ALIAS=]SPEC",
        help="a backend model, reached as models/ALIAS (repeatable; default ALIAS: the model's "
        "name, e.g. qwen2.5-coder-1.5b for local:qwen2.5-coder-1.5b)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--api-key", help=f"require this key from clients (prefer ${KEY_VARIABLE}: flags show in ps)")
    p.add_argument(
        "--max-concurrent", type=int, default=4, help="generate requests running at once; more get 429 (default 4)"
    )
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    p.add_argument(
        "--run-timeout",
        type=float,
        default=300.0,
        help="seconds one request may take, all model calls and executions (default 300)",
    )
    p.set_defaults(handler=handle)


def default_alias(spec: str) -> str:
    """``local:qwen2.5-coder-1.5b`` → ``qwen2.5-coder-1.5b``; ``openai:m@http://...`` → ``m``;
    ``local:/x/model.gguf`` → ``model``."""
    arg = spec.partition(":")[2] or spec
    arg = arg.split("@")[0].rstrip("/")
    arg = arg.rsplit("/", 1)[-1].removesuffix(".gguf").removesuffix(".jsonl").removesuffix(".json")
    return re.sub(r"[^A-Za-z0-9._-]", "-", arg).strip("-.") or "model"


def parse_model_option(value: str) -> tuple[str, str]:
    """``ALIAS=SPEC`` or ``SPEC`` (a spec's own ``=``, e.g. in a URL, comes after its colon)."""
    alias, sep, spec = value.partition("=")
    if sep and ":" not in alias:
        if not alias or not spec:
            raise UsageError(f"--model {value!r}: write ALIAS=SPEC, e.g. qwen=local:qwen2.5-coder-1.5b")
        return alias, spec
    return default_alias(value), value


def settings_from(args: argparse.Namespace, env: dict[str, str]):
    from ..serve import ServeSettings

    key = args.api_key or env.get(KEY_VARIABLE) or None
    try:
        return ServeSettings(
            host=args.host,
            port=args.port,
            api_key=key,
            max_concurrent_runs=args.max_concurrent,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            run_timeout_s=args.run_timeout,
        )
    except ValueError as exc:
        raise UsageError(re.sub(r"ServeSettings\.(\w+)", lambda m: FLAGS.get(m[1], m[1]), str(exc))) from None


FLAGS = {
    "port": "--port",
    "max_concurrent_runs": "--max-concurrent",
    "max_body_bytes": "--max-body-mb",
    "run_timeout_s": "--run-timeout",
    "api_key": f"--api-key / ${KEY_VARIABLE}",
}


def build_backends(args: argparse.Namespace, loop_settings: LoopConfig):
    from ..serve import Backend

    executor = resolve_executor(args)
    backends = []
    for value in args.model or [None]:
        one = copy.copy(args)
        alias, one.model = parse_model_option(value) if value else (None, None)
        model = resolve_model(one)  # no --model: the default model, announced on stderr
        try:
            backends.append(Backend(alias or default_alias(model.name), model, executor, loop_settings))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return backends


def handle(args: argparse.Namespace) -> int:
    from ..serve import create_app, run_server

    settings = settings_from(args, dict(os.environ))
    loop_settings = loop_config(args)
    backends = build_backends(args, loop_settings)
    try:
        app = create_app(backends, settings, close_on_exit=True)
    except ValueError as exc:  # e.g. two backends with one alias
        raise UsageError(str(exc)) from None

    def announce(where: str) -> None:
        print(
            f"codeloop serve: {where}/v1beta  (executor {backends[0].executor.name}; "
            f"{'API key required' if settings.api_key else 'no API key'})",
            file=sys.stderr,
            flush=True,
        )
        for backend in backends:
            print(f"  models/{backend.alias}  ->  {backend.spec}", file=sys.stderr, flush=True)

    try:
        run_server(app, settings, log_level="warning", announce=announce)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: uvicorn shut down cleanly first
        pass
    print("codeloop serve: stopped", file=sys.stderr)
    return EXIT_OK
