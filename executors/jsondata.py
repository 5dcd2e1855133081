"""One JSON round trip for the project's dataclasses (results, settings, store rows).

Reading tolerates what a newer or older writer may have stored: keys this
version does not know are ignored, and a missing key takes the field's
default. Only a missing field without a default is an error, named with the
type and the field. Nested values are converted by the callables passed in
(``Attempt.from_json`` for a list of attempts, an enum class, ...), so each
type says in one line how its fields come back.

It lives in ``executors`` because that is the lowest package: the
orchestrator, the batch store and the benchmarks all import it from here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class JSONDataError(ValueError):
    """Stored JSON that cannot become the type asked for."""


def encode(value: Any) -> Any:
    """A JSON-ready value: enums by value, objects with ``to_json`` by it,
    dataclasses field by field, sequences and mappings element by element."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "to_json"):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def to_json(obj: Any) -> dict[str, Any]:
    """Every init field of a dataclass, encoded."""
    return {f.name: encode(getattr(obj, f.name)) for f in fields(obj) if f.init}


def list_of(convert: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    """A converter for a JSON list whose elements each go through ``convert``."""
    return lambda values: [convert(v) for v in values]


def from_json(cls: type[T], data: Any, /, **convert: Callable[[Any], Any]) -> T:
    """Build ``cls`` from a JSON object: unknown keys are ignored, missing keys
    take their defaults, and ``convert[name]`` turns a non-null value of field
    ``name`` into its type."""
    if not isinstance(data, Mapping):
        raise JSONDataError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]  # cls is a dataclass; the signature says type[T] for any caller
        if not f.init:
            continue
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                missing.append(f.name)
            continue
        value = data[f.name]
        converter = convert.get(f.name)
        try:
            kwargs[f.name] = converter(value) if converter is not None and value is not None else value
        except JSONDataError as exc:  # from a nested type: say where it sits
            raise JSONDataError(f"{cls.__name__}.{f.name}: {exc}") from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise JSONDataError(f"{cls.__name__}.{f.name}: cannot read {repr(value)[:80]}: {exc}") from exc
    if missing:
        raise JSONDataError(f"{cls.__name__}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return cls(**kwargs)
