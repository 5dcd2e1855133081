"""Checking what a tool call sends: session names, input files, deadlines.

Every refusal is a :class:`ToolArgumentError` naming the argument at fault;
the server turns it into an MCP tool error the client can read and correct.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from executors import InputFile

from .settings import ToolSettings

SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ToolArgumentError(ValueError):
    """A tool argument is wrong; the message says which and why."""


class FileArg(BaseModel):
    """One input file, placed in the code's working directory under ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="bare file name, e.g. data.csv (no directories)")
    content: str = Field(description="the file's content: plain text, or base64 when encoding is 'base64'")
    encoding: Literal["text", "base64"] = Field("text", description="how content is given")


def check_session(session: str, argument: str = "session") -> str:
    if not SESSION_NAME.fullmatch(session):
        raise ToolArgumentError(
            f"{argument} {session[:80]!r} is not a valid session name: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return session


def check_file_name(name: str, argument: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ToolArgumentError(f"{argument} {name[:80]!r} must be a bare file name such as data.csv")
    return name


def decode_files(files: Sequence[FileArg] | None, settings: ToolSettings) -> list[InputFile]:
    """Input files as the executors take them, within the size cap and without duplicates."""
    decoded: list[InputFile] = []
    seen: set[str] = set()
    total = 0
    for i, f in enumerate(files or ()):
        name = check_file_name(f.name, f"files[{i}].name")
        if name in seen:
            raise ToolArgumentError(f"files[{i}].name {name!r} is given twice")
        seen.add(name)
        if f.encoding == "base64":
            try:
                data = base64.b64decode("".join(f.content.split()), validate=True)  # line breaks are common
            except (binascii.Error, ValueError) as exc:
                raise ToolArgumentError(f"files[{i}].content is not valid base64: {exc}") from None
        else:
            data = f.content.encode("utf-8")
        total += len(data)
        if total > settings.max_input_bytes:
            raise ToolArgumentError(
                f"files: input files exceed {settings.max_input_bytes} bytes together (at files[{i}] {name!r})"
            )
        decoded.append(InputFile(name=name, data=data))
    return decoded


def check_timeout(timeout_s: float | None, settings: ToolSettings) -> float:
    if timeout_s is None:
        return settings.limits.timeout_s
    if not 0 < timeout_s <= settings.max_timeout_s:
        raise ToolArgumentError(f"timeout_s must be in (0, {settings.max_timeout_s:g}], got {timeout_s:g}")
    return float(timeout_s)
