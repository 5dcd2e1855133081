"""A fresh working directory per execution: inputs in, artifacts out."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .base import Artifact, InputFile, Limits


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
            name = Path(f.name).name  # never let a name climb out of the directory
            if not name or name in (".", ".."):
                raise ValueError(f"bad input file name {f.name!r}")
            target = self.work / name
            target.write_bytes(f.data)
            target.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # read-only copy
            st = target.stat()
            self._inputs[name] = (st.st_size, st.st_mtime_ns)

    def collect_artifacts(self, limits: Limits) -> list[Artifact]:
        """Files the code wrote (new or changed), capped in size and number."""
        artifacts: list[Artifact] = []
        total = 0
        for path in sorted(self.work.rglob("*")):
            try:
                st = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # no symlinks, devices or fifos: they could point anywhere
            if st.st_nlink > 1:
                continue  # a hard link may be a host file (e.g. /etc/passwd) linked into the workdir
            rel = path.relative_to(self.work).as_posix()
            if self._inputs.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            if len(artifacts) >= limits.max_artifacts:
                break
            if st.st_size > limits.artifact_bytes or total + st.st_size > limits.artifacts_total_bytes:
                artifacts.append(Artifact(name=rel, data=b"", truncated=True, mime_type=Artifact.of(rel, b"").mime_type))
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            total += len(data)
            artifacts.append(Artifact.of(rel, data))
        return artifacts

    def cleanup(self) -> None:
        def make_writable(func, path, _exc):
            try:
                os.chmod(path, stat.S_IRWXU)
                func(path)
            except OSError:
                pass

        shutil.rmtree(self.root, onerror=make_writable)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
