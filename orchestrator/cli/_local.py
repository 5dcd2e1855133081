"""Options of local models (``local:NAME``): their llama.cpp server and sampling."""

from __future__ import annotations

import argparse
import re
import sys

from . import UsageError

# Flags of this module and the LocalSettings fields they set. The lead's shared
# flags (--temperature, --max-tokens, --tools) apply to local models too.
FLAG_FIELDS = {
    "ctx_size": "n_ctx",
    "threads": "threads",
    "parallel": "parallel",
    "seed": "seed",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "tools": "tools",
}

FIELD_FLAGS = {field: "--" + flag.replace("_", "-") for flag, field in FLAG_FIELDS.items()}


def add_local_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local models (--model local:NAME)")
    group.add_argument(
        "--ctx-size", type=int, help="context tokens of the local server, split over its parallel slots (default 8192)"
    )
    group.add_argument(
        "--threads",
        type=int,
        help="CPU threads of the local server (default: one per core up to 8; 1 is faster on a busy machine)",
    )
    group.add_argument("--parallel", type=int, help="requests the local server answers at once (default 1)")
    group.add_argument("--seed", type=int, help="sampling seed of local models (default 0)")


def local_settings(args: argparse.Namespace):
    """LocalSettings from the flags that were given; the rest keep their defaults."""
    from ..models.local import LocalSettings

    overrides = {
        field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag, None) is not None
    }
    try:
        return LocalSettings(**overrides)
    except ValueError as exc:
        raise UsageError(re.sub(r"\w*Settings\.(\w+)", lambda m: FIELD_FLAGS.get(m[1], m[1]), str(exc))) from exc


def build_local_model(arg: str, args: argparse.Namespace):
    """The LocalModel for ``local:ARG`` with the command line's settings; its
    progress (fetching the file, starting the server) goes to stderr."""
    from ..models.local import LocalModel

    return LocalModel(arg, local_settings(args), notify=lambda message: print(f"codeloop: {message}", file=sys.stderr))
