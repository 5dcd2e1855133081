"""``codeloop``: a small command line over the Python API.

Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which sets ``handler=func`` on its parser; the
handler returns the exit code.
Exit codes: 0 solved or answered, 1 failed, 2 bad usage, 3 unverified (the task
needed code, but the model answered without running any).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from executors.plugins import PluginTable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNVERIFIED = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the command line: printed, exit code 2."""


def _version() -> str:
    try:
        return version("codeloop")
    except PackageNotFoundError:
        return "unknown"


COMMANDS_GROUP = "codeloop.commands"


def build_parser(commands: PluginTable | None = None) -> argparse.ArgumentParser:
    """The parser with this package's subcommands and those registered under
    ``codeloop.commands`` (``commands``: default, the installed ones)."""
    parser = argparse.ArgumentParser(
        prog="codeloop",
        description="Generate code with a model, run it in a sandbox, feed errors back, summarise.",
    )
    parser.add_argument("--version", action="version", version=f"codeloop {_version()}")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning (default) or error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    table = commands or PluginTable.discover(COMMANDS_GROUP)
    for name in table.names():
        try:
            register = table.load(name)
        except ImportError as exc:  # a plugin (or an extra) that is not installed: say so when it is used
            _unavailable(sub, name, exc)
            continue
        register(sub)
    return parser


def _unavailable(sub: Any, name: str, exc: ImportError) -> None:
    reason = f"the {name!r} command cannot be loaded: {exc}"

    def refuse(args: argparse.Namespace) -> int:
        raise UsageError(reason)

    # No option prefix: whatever follows the name is taken, so the reason is shown, not a parse error.
    parser = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=refuse)


def main(argv: list[str] | None = None) -> int:
    from ..logs import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    configure_logging(json_lines=args.log_json, level=args.log_level)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"codeloop: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("codeloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
