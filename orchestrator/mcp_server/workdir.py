"""Reading a session's working directory from the host without being tricked.

The code in the sandbox owns that directory, so it may have planted symlinks,
hard links to host files, fifos or devices there. Listing reuses the
executors' own scan (regular files with one link only); reading walks every
path component with ``O_NOFOLLOW`` and checks what it opened, so a link swapped
in between the two cannot lead outside.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from executors.workspace import scan_dir


class WorkdirError(Exception):
    """A file could not be listed or read; the message names it and says why."""


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative to the working directory, with '/' between parts
    size: int


def list_workdir(root: Path) -> list[FileEntry]:
    return [FileEntry(name, size) for name, (size, _mtime) in sorted(scan_dir(root).items())]


def read_workdir_file(root: Path, name: str, max_bytes: int) -> bytes:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise WorkdirError(
            f"name {name[:80]!r} must be a relative path inside the working directory, e.g. out/data.csv"
        )
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, flags_dir)
    except OSError as exc:
        raise WorkdirError(f"the session's working directory is gone: {exc.strerror}") from None
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK if last else flags_dir
            inner = _open_at(fd, part, flags, name)
            os.close(fd)
            fd = inner
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise WorkdirError(f"{name!r} is not a regular file the code wrote")
        if st.st_size > max_bytes:
            raise WorkdirError(f"{name!r} has {st.st_size} bytes, more than the {max_bytes} bytes read_file returns")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise WorkdirError(f"{name!r} grew past the {max_bytes} bytes read_file returns")
        return data
    finally:
        os.close(fd)


def _open_at(dir_fd: int, part: str, flags: int, name: str) -> int:
    """Open ``part`` inside ``dir_fd``; a symlink or a missing part is refused."""
    try:
        return os.open(part, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise WorkdirError(f"no file {name!r} in the session's working directory") from None
    except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file where a directory should be
        raise WorkdirError(f"{name!r} cannot be read: {exc.strerror}") from None
