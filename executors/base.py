"""The executor seam: one protocol, one result type, plain dataclasses.

Executors run code and know nothing of models. Every backend (local subprocess,
sandbox, pool, restricted, Jupyter) returns an :class:`ExecutionResult` whose
``outcome`` uses Gemini's vocabulary (OK, FAILED, DEADLINE_EXCEEDED) plus the
outcomes a local sandbox can observe that Gemini's server hides from us.
"""

from __future__ import annotations

import abc
import base64
import enum
import mimetypes
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from . import jsondata


class Outcome(str, enum.Enum):
    OK = "OK"
    FAILED = "FAILED"  # exception or non-zero exit
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # wall-clock timeout
    MEMORY_EXCEEDED = "MEMORY_EXCEEDED"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"  # output flood past the hard cap; the run was stopped
    KILLED = "KILLED"  # ended by a signal we did not send for a deadline
    SANDBOX_ERROR = "SANDBOX_ERROR"  # the executor itself broke, not the code

    @property
    def ok(self) -> bool:
        return self is Outcome.OK


class Isolation(enum.StrEnum):
    """How strongly an execution was isolated: the one vocabulary every executor reports.

    A ``StrEnum``, so a member compares equal to (and serialises as) its value:
    results stored as plain strings load back as members.
    """

    BWRAP = "bwrap"  # bubblewrap: all namespaces, read-only system, private /tmp
    UNSHARE = "unshare"  # user+net+pid namespaces via unshare(1), plus rlimits
    RLIMITS = "rlimits"  # resource limits only: no real boundary
    RESTRICTED = "restricted"  # RestrictedPython policy inside a process sandbox
    KERNEL = "kernel"  # a Jupyter kernel on a gateway: the gateway host's isolation
    REMOTE = "remote"  # the model provider's own servers (Gemini's code execution)
    NONE = "none"  # trusted code in a plain subprocess, or no code ran

    @classmethod
    def _missing_(cls, value: object) -> Isolation | None:
        # Older jupyter results said "undetected" when the kernel never started: no code ran.
        return cls.NONE if value == "undetected" else None


@dataclass(frozen=True)
class Limits:
    """Resource limits for one execution. Passed in, never read from globals."""

    timeout_s: float = 30.0
    memory_bytes: int = 2 * 1024**3
    cpu_s: float | None = None  # defaults to the timeout plus a little slack
    output_bytes: int = 64 * 1024  # kept per stream; the rest is flagged as truncated
    output_hard_bytes: int = 32 * 1024**2  # past this the run is stopped: OUTPUT_LIMIT
    file_bytes: int = 256 * 1024**2  # largest file the code may write (RLIMIT_FSIZE)
    artifact_bytes: int = 8 * 1024**2  # largest artifact brought back
    artifacts_total_bytes: int = 32 * 1024**2
    max_artifacts: int = 50
    open_files: int = 256
    max_processes: int = 64

    def replace(self, **changes: Any) -> Limits:
        return Limits(**{**asdict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        return jsondata.from_json(cls, data)


@dataclass(frozen=True)
class Artifact:
    """A file the code produced (or a figure it drew), with its bytes."""

    name: str
    data: bytes
    mime_type: str = "application/octet-stream"
    truncated: bool = False  # larger than the artifact cap; data holds nothing

    @classmethod
    def of(cls, name: str, data: bytes, mime_type: str | None = None) -> Artifact:
        guessed = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return cls(name=name, data=data, mime_type=guessed)

    @property
    def size(self) -> int:
        return len(self.data)

    def save(self, directory: str | Path) -> Path:
        target = Path(directory) / Path(self.name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.data)
        return target

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mime_type": self.mime_type,
            "size": self.size,
            "truncated": self.truncated,
            "data_b64": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return jsondata.from_json(cls, {"data": data.get("data_b64", ""), **data}, data=base64.b64decode)


@dataclass(frozen=True)
class InputFile:
    """A file handed to the code, visible in its working directory as ``name``."""

    name: str
    data: bytes

    @classmethod
    def from_path(cls, path: str | Path, name: str | None = None) -> InputFile:
        p = Path(path)
        try:
            return cls(name=name or p.name, data=p.read_bytes())
        except OSError as exc:
            raise FileNotFoundError(f"input file {str(p)!r} cannot be read: {exc.strerror}") from exc

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "data_b64": base64.b64encode(self.data).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputFile:
        renamed = {"data": data["data_b64"]} if "data_b64" in data else {}
        return jsondata.from_json(cls, {**data, **renamed}, data=base64.b64decode)


def as_input_files(files: Sequence[str | Path | InputFile]) -> list[InputFile]:
    return [f if isinstance(f, InputFile) else InputFile.from_path(f) for f in files]


@dataclass
class ExecutionResult:
    outcome: Outcome
    stdout: str = ""
    stderr: str = ""
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration_s: float = 0.0
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    executor: str = ""
    isolation: Isolation = Isolation.NONE
    # Values of trailing expressions, as a REPL shows them (stateful executors).
    results: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.isolation = Isolation(self.isolation)  # a stored or hand-written string becomes a member

    @classmethod
    def sandbox_error(
        cls, message: str, *, executor: str, isolation: Isolation, error_type: str = "SandboxError", **fields: Any
    ) -> ExecutionResult:
        """The executor itself broke (or refused), not the code: the one way such a result is made."""
        return cls(
            outcome=Outcome.SANDBOX_ERROR,
            error_type=error_type,
            error_message=message,
            executor=executor,
            isolation=isolation,
            **fields,
        )

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated

    @property
    def images(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.mime_type.startswith("image/")]

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["outcome"] = self.outcome.value
        data["isolation"] = self.isolation.value
        data["artifacts"] = [a.to_json() for a in self.artifacts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionResult:
        return jsondata.from_json(
            cls,
            data,
            outcome=Outcome,
            isolation=lambda v: Isolation(v or Isolation.NONE),
            artifacts=jsondata.list_of(Artifact.from_json),
            results=list,
        )


@runtime_checkable
class Executor(Protocol):
    """Runs one piece of Python and reports what happened.

    ``session`` names a conversation: stateful executors (Jupyter) keep
    variables per session; stateless ones ignore it. Implementations must be
    safe to call concurrently and must never let the code harm the caller.
    :class:`BaseExecutor` implements this; third-party executors may too.
    """

    name: str
    stateful: bool

    async def execute(
        self,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        limits: Limits | None = None,
        session: str | None = None,
    ) -> ExecutionResult: ...

    async def reset(self, session: str | None = None) -> None:
        """Forget a session's state (a no-op for stateless executors)."""
        ...

    async def aclose(self) -> None: ...


class BaseExecutor(abc.ABC):
    """The executor contract, written once: limits, ``execute``, life cycle, error results.

    Subclasses implement :meth:`_run`, which always receives resolved limits
    (the call's, else the executor's). ``start`` does any slow set-up ahead of
    the first run (detecting the isolation level, starting processes);
    ``async with`` starts and closes. ``isolation`` is the level runs get:
    ``None`` until it is known (isolating executors detect it in ``start``).
    """

    name: str = "executor"
    stateful: bool = False

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    @property
    def isolation(self) -> Isolation | None:
        return Isolation.NONE

    async def execute(
        self,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        limits: Limits | None = None,
        session: str | None = None,
    ) -> ExecutionResult:
        return await self._run(code, files=files, limits=limits or self.limits, session=session)

    @abc.abstractmethod
    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        """Run ``code`` under ``limits`` (already resolved) and report."""

    def error_result(self, message: str, *, error_type: str = "SandboxError", **fields: Any) -> ExecutionResult:
        """A SANDBOX_ERROR result from this executor (its name, its isolation as far as known)."""
        fields.setdefault("isolation", self.isolation or Isolation.NONE)
        return ExecutionResult.sandbox_error(message, executor=self.name, error_type=error_type, **fields)

    async def start(self) -> None:
        return None

    async def reset(self, session: str | None = None) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
