"""A fresh working directory per execution: inputs in, artifacts out."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .base import Artifact, InputFile, Limits
from .inside import kernel_files


def safe_input_name(name: str) -> str:
    """The bare file name an input is stored under; a name cannot climb out."""
    base = Path(name).name
    if not base or base in (".", ".."):
        raise ValueError(f"bad input file name {name!r}: it must name a file")
    return base


def scan_dir(root: Path) -> dict[str, tuple[int, int]]:
    """Regular files under ``root`` with (size, mtime_ns); see :func:`kernel_files.scan`."""
    return kernel_files.scan(str(root))


def changed_files(
    root: Path,
    before: dict[str, tuple[int, int]],
    limits: Limits,
    *,
    current: dict[str, tuple[int, int]] | None = None,
) -> list[Artifact]:
    """Files new or changed since ``before``, capped in size and number.

    ``current`` is a fresh :func:`scan_dir` of ``root`` when the caller has one.
    """
    found = kernel_files.changed(
        str(root),
        before,
        scan_dir(root) if current is None else current,
        max_count=limits.max_artifacts,
        max_bytes=limits.artifact_bytes,
        max_total=limits.artifacts_total_bytes,
    )
    return [artifact_of(name, data) for name, data in found]


def artifact_of(name: str, data: bytes | None) -> Artifact:
    """An artifact for a file; ``data`` None means it was over the caps (kept as a truncated entry)."""
    if data is None:
        return Artifact(name=name, data=b"", truncated=True, mime_type=Artifact.of(name, b"").mime_type)
    return Artifact.of(name, data)


class Workspace:
    """``root/`` holds the code and scratch files; ``root/work`` is the code's cwd."""

    def __init__(self, prefix: str = "codeloop-", base_dir: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))
        self.work = self.root / "work"
        self.work.mkdir()
        self.code_path = self.root / "main.py"
        self._inputs: dict[str, tuple[int, int]] = {}

    def write_code(self, code: str) -> Path:
        self.code_path.write_text(code, encoding="utf-8")
        return self.code_path

    def add_inputs(self, files: Sequence[InputFile]) -> None:
        for f in files:
            name = safe_input_name(f.name)
            target = self.work / name
            target.write_bytes(f.data)
            target.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # read-only copy
            st = target.stat()
            self._inputs[name] = (st.st_size, st.st_mtime_ns)

    def collect_artifacts(self, limits: Limits) -> list[Artifact]:
        """Files the code wrote (new or changed), capped in size and number."""
        return changed_files(self.work, self._inputs, limits)

    def cleanup(self) -> None:
        def make_writable(func, path, _exc):
            try:
                os.chmod(path, stat.S_IRWXU)
                func(path)
            except OSError:
                pass

        shutil.rmtree(self.root, onerror=make_writable)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
