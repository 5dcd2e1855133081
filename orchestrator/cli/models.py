"""``codeloop models list | pull NAME | rm NAME | path NAME``: the local model files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..models.catalogue import CATALOGUE, ModelFileError, ModelSpecError
from ..models.files import ModelStore
from ..models.hf_source import PREFIX as HF_PREFIX
from . import EXIT_FAILED, EXIT_OK, UsageError

DIR_HELP = (
    "where model files live (default: $CODELOOP_MODELS_DIR, else $XDG_CACHE_HOME/codeloop/models, "
    "else ~/.cache/codeloop/models)"
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "models",
        help="list, download and remove local model files",
        description="The catalogue of local models and their files.",
    )
    parser.add_argument("--models-dir", metavar="DIR", help=DIR_HELP)
    parser.set_defaults(handler=_no_action)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    listing = actions.add_parser("list", help="the catalogue and what is downloaded")
    listing.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    listing.set_defaults(handler=handle_list)

    pull = actions.add_parser(
        "pull",
        help="download, assemble and verify a model",
        description="NAME is a catalogue name or hf:OWNER/REPO/FILE.gguf[@REVISION].",
    )
    pull.add_argument("name", metavar="NAME")
    pull.add_argument("--force", action="store_true", help="download again even if the file is there")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(handler=handle_pull)

    remove = actions.add_parser("rm", help="delete a model's file and any partial download")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=handle_rm)

    path = actions.add_parser("path", help="print where a model's file is (exit 1 if it is not there)")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(handler=handle_path)


def _no_action(args: argparse.Namespace) -> int:
    raise UsageError("codeloop models needs an action: list, pull NAME, rm NAME or path NAME")


def _store(args: argparse.Namespace, *, progress: bool = False) -> ModelStore:
    return ModelStore.from_env(os.environ, root=args.models_dir, catalogue=CATALOGUE, progress=progress)


def _fail(message: str) -> int:
    print(f"codeloop models: error: {message}", file=sys.stderr)
    return EXIT_FAILED


def _percent(score: float | None) -> str:
    return "-" if score is None else f"{score * 100:.1f}%"


def _state(verified: bool | None) -> str:
    return {True: "yes, verified", None: "yes", False: "WRONG SIZE"}[verified]


def handle_list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows: list[dict[str, Any]] = []
    for name, entry in store.catalogue.items():
        found = store.status(name)
        rows.append(
            {
                "name": name,
                "title": entry.title,
                "size": entry.size,
                "installed": found is not None,
                "verified": found.verified if found else None,
                "path": str(store.path_for(name)),
                "published_humaneval": entry.published_humaneval,
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    table = [("NAME", "SIZE", "INSTALLED", "HUMANEVAL", "PATH")]
    for row in rows:
        state = _state(row["verified"]) if row["installed"] else "no"
        table.append(
            (row["name"], f"{row['size'] / 1e6:,.0f} MB", state, _percent(row["published_humaneval"]), row["path"])
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
    return EXIT_OK


def handle_pull(args: argparse.Namespace) -> int:
    store = _store(args, progress=not args.quiet)
    try:
        if args.name.startswith(HF_PREFIX):
            path = store.pull_hf(args.name, force=args.force)
        else:
            path = store.pull(args.name, force=args.force)
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from exc
    except ModelFileError as exc:
        return _fail(str(exc))
    print(path)
    return EXIT_OK


def handle_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        removed = store.remove(args.name)
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from exc
    for path in removed:
        print(f"removed {path}", file=sys.stderr)
    if not removed:
        print(f"model {args.name} is not in {store.root}: nothing to remove", file=sys.stderr)
    return EXIT_OK


def handle_path(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.name.startswith(HF_PREFIX):
            print(store.hf_path(args.name))
            return EXIT_OK
        found = store.status(args.name)
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from exc
    except ModelFileError as exc:
        return _fail(str(exc))
    except FileNotFoundError:
        return _fail(f"{args.name} is not downloaded into {store.hf_cache()}: run `codeloop models pull {args.name}`")
    if found is None:
        return _fail(
            f"model {args.name} is not downloaded (it would be {store.path_for(args.name)}): "
            f"run `codeloop models pull {args.name}`"
        )
    if found.verified is False:
        return _fail(f"model file {found.path} has the wrong size: run `codeloop models pull {args.name} --force`")
    print(found.path)
    return EXIT_OK
