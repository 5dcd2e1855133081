"""Host path arithmetic for building a sandbox's mounts: which directories
block others, which paths sit inside which, and the parents bwrap must create."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path


def closed_ancestors(paths: Sequence[str]) -> list[str]:
    """The outermost directories on the way to ``paths`` that others cannot search."""
    found: list[str] = []
    for path in paths:
        parts = Path(path).parts
        for i in range(2, len(parts) + 1):
            d = "/" + "/".join(parts[1:i])
            try:
                mode = os.stat(d).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                found.append(d)
                break
    return outermost(found)


def under_any(path: str, roots: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in (os.path.realpath(x) for x in roots))


def outermost(paths: Iterable[str]) -> list[str]:
    """Drop paths that sit inside another one of the set."""
    result: list[str] = []
    for p in sorted({os.path.abspath(p) for p in paths}, key=len):
        if not any(p == r or p.startswith(r.rstrip("/") + "/") for r in result):
            result.append(p)
    return result


def mkdirs_args(target: str, made: set[str]) -> list[str]:
    """bwrap creates missing parents with mode 0700; make them 0755 so the sandbox user can pass."""
    args: list[str] = []
    parts = Path(target).parent.parts
    for i in range(2, len(parts) + 1):
        d = "/" + "/".join(parts[1:i])
        if d not in made:
            made.add(d)
            args += ["--perms", "0755", "--dir", d]
    return args
