"""Images the model sees: input images, and the figures its code drew.

The loop decides what a model sees (these settings, the model's
``takes_images`` trait) and attaches the pictures to the conversation's
messages as ``images`` (of user and execution messages); each provider only renders them in its
wire format. Figures are downscaled and capped per turn; whatever is left out
is named in the feedback text, never dropped silently.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import PurePath
from typing import Any, Literal

from executors.base import Artifact, ExecutionResult, InputFile

from .types import ExecutionMessage

SeeFigures = Literal["auto", "on", "off"]

# The image types Gemini lists for input files (PNG, JPEG), plus WebP, which
# Gemini, OpenAI and Anthropic all take as well.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class InputFileTooLarge(ValueError):
    """An input image over the size cap: it would not be shown whole, so the run does not start."""


@dataclass(frozen=True)
class ImageSettings:
    """``see_figures``: ``auto`` shows an execution's PNG figures to models
    that take images, ``on`` to every model, ``off`` to none.
    ``max_input_image_bytes`` caps each input image shown to a model (5 MB is
    Anthropic's per-image limit, the smallest of the three). Per turn at most
    ``max_figures`` figures totalling ``max_figure_bytes`` after downscaling
    to ``max_side_px`` on their longer side are shown."""

    see_figures: SeeFigures = "auto"
    max_input_image_bytes: int = 5 * 1024 * 1024
    max_figures: int = 3
    max_figure_bytes: int = 1024 * 1024
    max_side_px: int = 768

    def __post_init__(self) -> None:
        if self.see_figures not in ("auto", "on", "off"):
            raise ValueError(f"see_figures must be 'auto', 'on' or 'off', got {self.see_figures!r}")
        for name in ("max_input_image_bytes", "max_figures", "max_figure_bytes", "max_side_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageSettings.{name} must be at least 1, got {getattr(self, name)}")

    def shows_figures(self, takes_images: bool) -> bool:
        return self.see_figures == "on" or (self.see_figures == "auto" and takes_images)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageSettings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def image_mime(name: str) -> str | None:
    """The image type of a file by its name, or None for anything else."""
    return IMAGE_TYPES.get(PurePath(name).suffix.lower())


def input_images(files: Sequence[InputFile], settings: ImageSettings, takes_images: bool) -> list[Artifact]:
    """The input files a model that takes images sees as pictures (they are
    in the sandbox as well). An image over the cap is an error naming it."""
    if not takes_images:
        return []
    images = []
    for f in files:
        mime = image_mime(f.name)
        if mime is None:
            continue
        if len(f.data) > settings.max_input_image_bytes:
            raise InputFileTooLarge(
                f"input file {f.name!r} is {len(f.data)} bytes, over the cap of {settings.max_input_image_bytes} "
                "bytes for images shown to the model (raise ImageSettings.max_input_image_bytes, "
                "--max-image-bytes on the command line)"
            )
        images.append(Artifact(name=f.name, data=f.data, mime_type=mime))
    return images


def with_figures(message: ExecutionMessage, settings: ImageSettings, takes_images: bool) -> ExecutionMessage:
    """An execution message with the figures its result drew attached, as
    settings allow; figures left out are named in its feedback."""
    if not settings.shows_figures(takes_images):
        return message
    shown, left_out = pick_figures(message.result, settings)
    if not shown and not left_out:
        return message
    lines = [message.feedback]
    if shown:
        lines.append(f"Figures attached for you to check: {', '.join(f.name for f in shown)}.")
    if left_out:
        lines.append(
            f"Not attached (over the limit of {settings.max_figures} figures or "
            f"{settings.max_figure_bytes} bytes a turn, or not a readable PNG): {', '.join(left_out)}."
        )
    return replace(message, feedback="\n".join(lines), images=shown)


def pick_figures(result: ExecutionResult, settings: ImageSettings) -> tuple[list[Artifact], list[str]]:
    """The PNG figures to show (downscaled, within the caps) and the names of the rest."""
    shown: list[Artifact] = []
    left_out: list[str] = []
    total = 0
    for artifact in result.artifacts:
        if artifact.mime_type != "image/png" or artifact.truncated or not artifact.data:
            continue
        small = downscale(artifact.data, settings.max_side_px)
        if small is None or len(shown) >= settings.max_figures or total + len(small) > settings.max_figure_bytes:
            left_out.append(artifact.name)
            continue
        total += len(small)
        shown.append(Artifact(name=artifact.name, data=small, mime_type="image/png"))
    return shown, left_out


def downscale(png: bytes, max_side: int) -> bytes | None:
    """The PNG with its longer side at most ``max_side`` pixels (as it is
    when already small); None when it is not a readable image. Pillow comes
    with matplotlib, a core dependency."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as image:
            if max(image.size) <= max_side:
                return png
            image.thumbnail((max_side, max_side))
            out = io.BytesIO()
            image.save(out, format="PNG", optimize=True)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def estimate_image_tokens(data: bytes) -> int:
    """An estimate of what an image costs in prompt tokens, for fitting a
    request before it is sent (the usage the providers report is exact):
    width x height / 750, Anthropic's published rule; Gemini (258 a 768 px
    tile) and OpenAI (85 + 170 a 512 px tile) come out near it. An image that
    cannot be read counts as a 768 px square."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        width = height = 768
    return width * height // 750 + 1
