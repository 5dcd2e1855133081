"""Batch inputs: JSONL, CSV, plain text or a directory of prompt files.

The whole input is read and validated before anything runs: every problem
(duplicate ids, empty prompts, missing files, malformed lines) is collected
with its file and line and reported together in one :class:`BatchInputError`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv"}
PROMPT_FILE_SUFFIXES = {".txt", ".md"}
JSONL_FIELDS = {"id", "prompt", "files", "metadata"}


@dataclass
class BatchItem:
    """One prompt of a batch. ``files`` are paths (absolute once loaded from a
    file, so a resumed batch finds them from any working directory);
    ``source`` says where the item came from, for error messages."""

    id: str
    prompt: str
    files: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "files": list(self.files),
            "metadata": dict(self.metadata),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchItem:
        return cls(
            id=str(data["id"]),
            prompt=data["prompt"],
            files=list(data.get("files", [])),
            metadata=dict(data.get("metadata", {})),
            source=data.get("source", ""),
        )


@dataclass(frozen=True)
class InputProblem:
    where: str  # "prompts.jsonl:12" or "items[3]"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class BatchInputError(ValueError):
    """The batch input is invalid; ``problems`` lists every issue found."""

    def __init__(self, problems: Sequence[InputProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the batch input; nothing was run:\n{lines}")


def id_problem(item_id: str) -> str | None:
    """Why an id cannot be used, or None. Ids name artifact directories, so
    they must be non-empty and must not climb out of ``artifacts/``."""
    if not item_id.strip():
        return "empty id"
    if item_id != item_id.strip():
        return f"id {item_id!r} has leading or trailing whitespace"
    if "/" in item_id or "\\" in item_id or "\x00" in item_id or item_id in (".", ".."):
        return f"id {item_id!r} cannot name a directory (no '/', '\\', NUL, '.' or '..')"
    return None


def load_items(path: str | Path) -> list[BatchItem]:
    """Read and validate a batch input, choosing the format from the path:
    a directory (``.txt``/``.md`` files), ``.jsonl``/``.ndjson``, ``.csv``, or
    anything else as plain text with one prompt per non-empty line."""
    source = Path(path)
    if not source.exists():
        raise BatchInputError([InputProblem(str(source), "no such file or directory")])
    if source.is_dir():
        items, problems = _read_directory(source)
    elif source.suffix.lower() in JSONL_SUFFIXES:
        items, problems = _read_jsonl(source)
    elif source.suffix.lower() in CSV_SUFFIXES:
        items, problems = _read_csv(source)
    else:
        items, problems = _read_text(source)
    return _finish(items, problems, empty_where=str(source))


def coerce_items(
    items: Iterable[str | BatchItem | Mapping[str, Any]], *, base_dir: Path | None = None
) -> list[BatchItem]:
    """Validate items given in Python: prompt strings (ids ``1``, ``2``...),
    :class:`BatchItem` objects or mappings with the JSONL fields."""
    result: list[BatchItem] = []
    problems: list[InputProblem] = []
    base = base_dir or Path.cwd()
    for index, raw in enumerate(items):
        where = f"items[{index}]"
        if isinstance(raw, str):
            result.append(BatchItem(id=str(index + 1), prompt=raw, source=where))
        elif isinstance(raw, BatchItem):
            item = BatchItem(
                id=raw.id,
                prompt=raw.prompt,
                files=list(raw.files),
                metadata=dict(raw.metadata),
                source=raw.source or where,
            )
            item.files, file_problems = _resolve_files(item.files, base, where)
            problems.extend(file_problems)
            result.append(item)
        elif isinstance(raw, Mapping):
            parsed = _item_from_mapping(raw, where, default_id=str(index + 1), base=base, problems=problems)
            if parsed is not None:
                result.append(parsed)
        else:
            problems.append(
                InputProblem(where, f"expected a prompt string, BatchItem or mapping, got {type(raw).__name__}")
            )
    return _finish(result, problems, empty_where="items")


def _finish(items: list[BatchItem], problems: list[InputProblem], *, empty_where: str) -> list[BatchItem]:
    seen: dict[str, str] = {}
    for item in items:
        reason = id_problem(item.id)
        if reason:
            problems.append(InputProblem(item.source, reason))
        if not item.prompt.strip():
            problems.append(InputProblem(item.source, f"empty prompt (id {item.id!r})"))
        if item.id in seen:
            problems.append(InputProblem(item.source, f"duplicate id {item.id!r} (first at {seen[item.id]})"))
        else:
            seen[item.id] = item.source
    if not items and not problems:
        problems.append(InputProblem(empty_where, "no prompts found"))
    if problems:
        raise BatchInputError(sorted(problems, key=_problem_order))
    return items


_POSITION = re.compile(r"^(.*?)(?::(\d+)|\[(\d+)\])$")


def _problem_order(problem: InputProblem) -> tuple[str, int]:
    # Keep input order: "a.jsonl:10" after "a.jsonl:9", "items[10]" after "items[9]".
    match = _POSITION.match(problem.where)
    if not match:
        return (problem.where, 0)
    return (match.group(1), int(match.group(2) or match.group(3)))


def _resolve_files(files: Sequence[Any], base: Path, where: str) -> tuple[list[str], list[InputProblem]]:
    resolved: list[str] = []
    problems: list[InputProblem] = []
    for entry in files:
        if not isinstance(entry, str) or not entry:
            problems.append(
                InputProblem(where, f"field 'files': each entry must be a non-empty path string, got {entry!r}")
            )
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            problems.append(InputProblem(where, f"field 'files': {entry!r} not found (looked at {path})"))
            continue
        resolved.append(str(path.resolve()))
    return resolved, problems


def _item_from_mapping(
    raw: Mapping[str, Any], where: str, *, default_id: str, base: Path, problems: list[InputProblem]
) -> BatchItem | None:
    before = len(problems)
    unknown = sorted(set(raw) - JSONL_FIELDS)
    if unknown:
        problems.append(
            InputProblem(
                where, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(JSONL_FIELDS))}"
            )
        )
    raw_id = raw.get("id", default_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        problems.append(InputProblem(where, f"field 'id' must be a string or integer, got {raw_id!r}"))
    prompt = raw.get("prompt")
    if not isinstance(prompt, str):
        problems.append(
            InputProblem(
                where,
                "field 'prompt' is missing"
                if prompt is None
                else f"field 'prompt' must be a string, got {type(prompt).__name__}",
            )
        )
    files = raw.get("files", [])
    if not isinstance(files, list):
        problems.append(InputProblem(where, f"field 'files' must be a list of paths, got {type(files).__name__}"))
        files = []
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.append(InputProblem(where, f"field 'metadata' must be an object, got {type(metadata).__name__}"))
        metadata = {}
    resolved, file_problems = _resolve_files(files, base, where)
    problems.extend(file_problems)
    if len(problems) > before and not isinstance(prompt, str):
        return None
    return BatchItem(
        id=str(raw_id),
        prompt=prompt if isinstance(prompt, str) else "",
        files=resolved,
        metadata=metadata,
        source=where,
    )


def _read_lines(path: Path) -> tuple[list[str], list[InputProblem]]:
    try:
        return path.read_text(encoding="utf-8").splitlines(), []
    except UnicodeDecodeError as exc:
        return [], [InputProblem(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    except OSError as exc:
        return [], [InputProblem(str(path), f"cannot be read: {exc.strerror}")]


def _read_jsonl(path: Path) -> tuple[list[BatchItem], list[InputProblem]]:
    lines, problems = _read_lines(path)
    items: list[BatchItem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(InputProblem(where, f"malformed JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(raw, dict):
            problems.append(InputProblem(where, f"expected a JSON object, got {type(raw).__name__}"))
            continue
        item = _item_from_mapping(raw, where, default_id=str(number), base=path.parent, problems=problems)
        if item is not None:
            items.append(item)
    return items, problems


def _read_csv(path: Path) -> tuple[list[BatchItem], list[InputProblem]]:
    lines, problems = _read_lines(path)
    if problems:
        return [], problems
    # Re-join with newlines so quoted fields keep their line breaks and line_num counts them.
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n", newline=""))
    items: list[BatchItem] = []
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [InputProblem(f"{path}:1", f"malformed CSV: {exc}")]
    if header is None:
        return [], []
    header = [h.strip() for h in header]
    missing = [name for name in ("id", "prompt") if name not in header]
    if missing:
        return [], [
            InputProblem(
                f"{path}:1",
                f"header must name the columns 'id' and 'prompt'; missing "
                f"{', '.join(map(repr, missing))} (got {header})",
            )
        ]
    id_col, prompt_col = header.index("id"), header.index("prompt")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(InputProblem(f"{path}:{start}", f"malformed CSV: {exc}"))
            break
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(InputProblem(where, f"expected {len(header)} columns, got {len(row)}"))
            continue
        metadata = {name: row[i] for i, name in enumerate(header) if i not in (id_col, prompt_col)}
        items.append(BatchItem(id=row[id_col], prompt=row[prompt_col], metadata=metadata, source=where))
    return items, problems


def _read_text(path: Path) -> tuple[list[BatchItem], list[InputProblem]]:
    lines, problems = _read_lines(path)
    items = [
        BatchItem(id=str(number), prompt=line.strip(), source=f"{path}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    return items, problems


def _read_directory(path: Path) -> tuple[list[BatchItem], list[InputProblem]]:
    items: list[BatchItem] = []
    problems: list[InputProblem] = []
    for entry in sorted(path.iterdir()):
        if not entry.is_file() or entry.suffix.lower() not in PROMPT_FILE_SUFFIXES or entry.name.startswith("."):
            continue
        lines, read_problems = _read_lines(entry)
        problems.extend(read_problems)
        if not read_problems:
            items.append(BatchItem(id=entry.stem, prompt="\n".join(lines).strip(), source=str(entry)))
    return items, problems
