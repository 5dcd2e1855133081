"""Cleaning up after a run inside the sandbox: finding what the code left
running, and emptying the scratch directories it wrote.

Loaded by the zygote by path: standard library only.
"""

from __future__ import annotations

import os
import stat


def descendants(root: int) -> list[int]:
    """Every process below ``root``, read from /proc/<pid>/task/<tid>/children."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def empty_directory(directory: str) -> None:
    """Remove everything inside ``directory`` on its own filesystem, even what its creator
    made read-only. Mount points are left alone: at the ``unshare`` level the slot's
    directory and codeloop's own files are bound back in under the private /tmp."""
    try:
        device = os.stat(directory).st_dev
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        _remove_on(device, os.path.join(directory, name))


def _remove_on(device: int, path: str) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        return
    if st.st_dev != device:
        return  # another filesystem mounted here: not scratch
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        os.chmod(path, 0o700)
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        _remove_on(device, os.path.join(path, name))
    try:
        os.rmdir(path)
    except OSError:
        pass  # it holds a mount point
