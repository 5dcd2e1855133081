"""Model files from a Hugging Face repository: ``hf:OWNER/REPO/FILE.gguf[@REVISION]``.

Downloads go through ``huggingface_hub.hf_hub_download`` (its cache layout,
resumable ``.incomplete`` blobs, atomic rename) into the store's ``hf/`` dir.
The endpoint and token are passed in, never read from the environment here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .catalogue import ModelFileError, ModelSpecError
from .progress import Progress

PREFIX = "hf:"
INSTALL_HINT = "hf: model sources need huggingface_hub: pip install 'codeloop[hf]'"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HfSource:
    repo_id: str
    filename: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str) -> HfSource:
        text = spec.removeprefix(PREFIX)
        location, at, revision = text.rpartition("@") if "@" in text else (text, "", "")
        parts = location.split("/")
        if len(parts) < 3 or not all(parts) or (at and not revision):
            raise ModelSpecError(f"bad Hugging Face source {spec!r}: write hf:OWNER/REPO/FILE.gguf[@REVISION]")
        filename = "/".join(parts[2:])
        if not filename.endswith(".gguf"):
            raise ModelSpecError(f"Hugging Face source {spec!r} must name a .gguf file, got {filename!r}")
        return cls(repo_id="/".join(parts[:2]), filename=filename, revision=revision or None)

    def __str__(self) -> str:
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo_id}/{self.filename}{suffix}"


def expected_sha256(path: Path) -> str | None:
    """The digest a downloaded file must have: huggingface_hub names each LFS blob
    by its sha256 (the Hub's ETag), so the blob behind the snapshot link tells."""
    name = path.resolve().name
    return name if SHA256_HEX.fullmatch(name) else None


def _tqdm_class(progress: bool | Progress, show_bars: bool):
    """huggingface_hub draws tqdm bars: keep them when asked for on a terminal,
    forward them to a custom reporter, and silence them otherwise."""
    if progress is True and show_bars:
        return None
    from tqdm import tqdm

    forward = progress if callable(progress) else None

    class QuietBar(tqdm):  # disabled tqdm keeps no count, so this one keeps its own
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = kwargs.get("initial", 0) or 0

        def update(self, n=1):
            self.done += n or 0
            if forward is not None:
                forward("download", self.done, self.total or 0)

    return QuietBar


def download(
    source: HfSource,
    cache_dir: Path,
    *,
    endpoint: str | None,
    token: str | None,
    progress: bool | Progress = False,
    show_bars: bool = False,
    cached_only: bool = False,
    force: bool = False,
) -> Path:
    """The local path of ``source``, downloading it unless ``cached_only``
    (then a missing file raises :class:`FileNotFoundError`)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:
        raise ModelFileError(INSTALL_HINT) from exc
    where = endpoint or "the Hugging Face Hub"
    try:
        path = hf_hub_download(
            source.repo_id,
            source.filename,
            revision=source.revision,
            cache_dir=cache_dir,
            endpoint=endpoint,
            token=token,
            local_files_only=cached_only,
            force_download=force,
            tqdm_class=_tqdm_class(progress, show_bars),
        )
    except LocalEntryNotFoundError as exc:
        if cached_only:
            raise FileNotFoundError(f"{source} is not in {cache_dir}") from exc
        raise ModelFileError(f"cannot download {source} from {where}: {exc}") from exc
    except Exception as exc:  # the library's HTTP, validation and I/O errors, reported with their kind
        raise ModelFileError(f"cannot download {source} from {where}: {type(exc).__name__}: {exc}") from exc
    return Path(path)
