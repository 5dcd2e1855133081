"""A kernel's working directory and the files in it: inputs in, what changed out.

Two users. The host side (``executors/workspace.py``) imports :func:`scan` and
:func:`changed` for the working directories it owns. A remote kernel (Jupyter
Kernel Gateway) gets this file's source sent over and run into a module of
its own (``codeloop_kernel_state``), so the user's namespace sees none of it;
the helper cells then call :func:`setup`, :func:`upload`, :func:`collect` and
:func:`cleanup`, and each leaves a JSON report in ``out`` for the executor to
read back as a user expression. Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tempfile

root: str | None = None  # the kernel's working directory (remote use)
snap: dict[str, tuple[int, int]] = {}  # what it held after the last upload or collect
out = ""  # the last helper's JSON report


def scan(directory: str) -> dict[str, tuple[int, int]]:
    """Regular files under ``directory`` with (size, mtime_ns), by relative POSIX path.

    No symlinks, devices or fifos (they could point anywhere), and no file with
    more than one link: a hard link may be a host file (e.g. /etc/passwd)
    linked into the directory.
    """
    found: dict[str, tuple[int, int]] = {}
    for base, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                found[os.path.relpath(path, directory).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns)
    return found


def changed(
    directory: str,
    before: dict[str, tuple[int, int]],
    current: dict[str, tuple[int, int]],
    *,
    max_count: int,
    max_bytes: int,
    max_total: int,
) -> list[tuple[str, bytes | None]]:
    """Files new or changed since ``before``, in name order: (name, data), data None when
    the file is over the size caps. At most ``max_count``; unreadable files are skipped."""
    found: list[tuple[str, bytes | None]] = []
    total = 0
    for name in sorted(current):
        if before.get(name) == current[name]:
            continue
        if len(found) >= max_count:
            break
        size = current[name][0]
        if size > max_bytes or total + size > max_total:
            found.append((name, None))
            continue
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        total += len(data)
        found.append((name, data))
    return found


# -- the remote kernel's helper cells ------------------------------------------------


def setup(path: str | None) -> None:
    """Make (or reuse) the working directory and move the kernel into it."""
    global root, snap, out
    if path is None:
        path = tempfile.mkdtemp(prefix="codeloop-kernel-")
    os.makedirs(path, exist_ok=True)
    os.chdir(path)
    root, snap = path, scan(path)
    out = json.dumps({"cwd": path})


def _work_dir() -> str:
    if root is None:
        raise RuntimeError("kernel_files.setup() must run before the other helpers")
    return root


def upload(files: list[tuple[str, str]]) -> None:
    """Write each (name, base64 data) into the working directory, replacing what was there."""
    global snap, out
    os.chdir(_work_dir())
    for name, data in files:
        if os.path.exists(name):
            os.remove(name)
        with open(name, "wb") as fh:
            fh.write(base64.b64decode(data))
    snap = scan(_work_dir())
    out = json.dumps({"uploaded": len(files)})


def collect(max_count: int, max_bytes: int, max_total: int) -> None:
    """Report the files changed since the last upload or collect (base64), capped."""
    global snap, out
    now = scan(_work_dir())
    found = changed(_work_dir(), snap, now, max_count=max_count, max_bytes=max_bytes, max_total=max_total)
    snap = now
    out = json.dumps(
        {
            "files": [
                {"name": name, "truncated": True}
                if data is None
                else {"name": name, "data": base64.b64encode(data).decode("ascii")}
                for name, data in found
            ]
        }
    )


def cleanup() -> None:
    """Remove the working directory (the kernel is about to be deleted)."""
    global out
    os.chdir("/")
    shutil.rmtree(_work_dir(), ignore_errors=True)
    out = json.dumps({"removed": root})
