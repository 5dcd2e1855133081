"""What shapes ``codeloop mcp``: limits, sessions, HTTP. Plain data, passed in.

The bearer token is not part of these settings: it is a secret, so it never
travels with data that may be printed or saved (``to_json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from executors import Limits


@dataclass(frozen=True)
class SessionSettings:
    """Stateful sessions: bounded in number, shut down when idle."""

    max_sessions: int = 4  # live kernels at once; a new session past this is refused
    idle_timeout_s: float = 600.0  # a session unused this long is shut down and forgotten

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"SessionSettings.max_sessions must be at least 1, got {self.max_sessions}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"SessionSettings.idle_timeout_s must be positive, got {self.idle_timeout_s}")


@dataclass(frozen=True)
class ToolSettings:
    """What one tool call may ask for."""

    limits: Limits = field(default_factory=Limits)  # timeout_s is the default deadline of a call
    max_timeout_s: float = 120.0  # the largest ``timeout_s`` a call may ask for
    max_input_bytes: int = 16 * 1024**2  # all input files of one call together, decoded
    max_read_bytes: int = 8 * 1024**2  # the largest file ``read_file`` returns
    sessions: SessionSettings = field(default_factory=SessionSettings)

    def __post_init__(self) -> None:
        if self.max_timeout_s <= 0:
            raise ValueError(f"ToolSettings.max_timeout_s must be positive, got {self.max_timeout_s}")
        if self.limits.timeout_s > self.max_timeout_s:
            raise ValueError(
                f"ToolSettings.limits.timeout_s ({self.limits.timeout_s:g}) exceeds max_timeout_s ({self.max_timeout_s:g})"
            )
        for name in ("max_input_bytes", "max_read_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ToolSettings.{name} must be at least 1, got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolSettings:
        return cls(
            **{
                **data,
                "limits": Limits.from_json(data["limits"]),
                "sessions": SessionSettings(**data["sessions"]),
            }
        )


@dataclass(frozen=True)
class HttpSettings:
    """The streamable HTTP transport."""

    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/mcp"
    max_body_bytes: int = 4 * 1024**2  # larger request bodies get 413
    max_concurrent_requests: int = 8  # POSTs in flight past this get 429 with Retry-After
    max_transport_sessions: int = 64  # MCP (transport) sessions held at once
    transport_idle_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"HttpSettings.port must be 0..65535, got {self.port}")
        if not self.path.startswith("/"):
            raise ValueError(f"HttpSettings.path must start with '/', got {self.path!r}")
        for name in ("max_body_bytes", "max_concurrent_requests", "max_transport_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"HttpSettings.{name} must be at least 1, got {getattr(self, name)}")

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpSettings:
        return cls(**data)
