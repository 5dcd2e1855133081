"""A working directory per pool slot, emptied after every execution instead of recreated.

On ext4 a ``rmdir`` costs milliseconds (a journal commit), more than a whole
pool execution of ``print(1)``; unlinking files costs microseconds. So each
pool slot keeps one directory and empties it after each run: the next
execution still starts in an empty directory, nothing the previous code
wrote survives, and the per-run cost is only for what the code created.
If the directory cannot be emptied (the code made something we cannot
remove), it is moved aside and deleted, and a new one is made.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

from .workspace import Workspace


def _force_remove(func, path, _exc) -> None:
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        os.chmod(path, stat.S_IRWXU)
        func(path)
    except OSError:
        pass


class SlotWorkspace(Workspace):
    """``root/work`` is the code's cwd and ``root/main.py`` holds code too big to send inline."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.code_path = root / "main.py"
        self._inputs: dict[str, tuple[int, int]] = {}
        self.root.mkdir(mode=0o711, exist_ok=True)
        self.root.chmod(0o711)  # the sandbox user may read main.py, not list the slot
        self.work.mkdir(exist_ok=True)

    def begin(self) -> None:
        """Start an execution: forget the previous inputs, make sure ``work`` is empty."""
        self._inputs = {}
        if any(os.scandir(self.work)):
            self.cleanup()

    def cleanup(self) -> None:
        """Empty ``work`` (and drop main.py); replace the directory if that fails."""
        if not self.root.exists():
            return  # the pool was closed and its directory removed while we ran
        try:
            self.code_path.unlink(missing_ok=True)
            self.work.chmod(0o755)  # the code may have made its own directory unwritable
            for entry in os.scandir(self.work):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, onerror=_force_remove)
                else:
                    os.unlink(entry.path)
            if any(os.scandir(self.work)):
                raise OSError(f"{self.work} could not be emptied")
        except OSError:
            # The slot directory itself stays: a zygote's sandbox has it bind-mounted.
            trash = self.root / f"discarded-{uuid.uuid4().hex}"
            os.replace(self.work, trash)
            shutil.rmtree(trash, onerror=_force_remove)
            self.work.mkdir()
