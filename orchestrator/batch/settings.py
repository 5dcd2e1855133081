"""What a batch was run with, and which of it must match on ``--resume``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Settings that change what an item's result would be: a resume with other
# values would mix results of two different experiments in one store.
RESULT_SETTINGS = ("model", "executor", "executor_options", "max_retries", "max_steps", "limits", "tools",
                   "require_code")


@dataclass
class BatchSettings:
    model: str
    executor: str
    executor_options: dict[str, Any] = field(default_factory=dict)
    max_retries: int = 5
    max_steps: int = 10
    limits: dict[str, Any] | None = None
    tools: str = "auto"
    require_code: str = "auto"
    # How the batch ran; free to change between sessions.
    concurrency: int = 8
    execution_concurrency: int = 8
    engine: str = "local"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BatchSettings":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Human-readable differences in the result-affecting settings."""
        now = self.to_json()
        return [f"{key}: stored {stored.get(key)!r}, now {now[key]!r}"
                for key in RESULT_SETTINGS if stored.get(key) != now[key]]
