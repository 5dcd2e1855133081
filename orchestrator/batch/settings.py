"""What a batch was run with, and which of it must match on ``--resume``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from executors import jsondata

from ..config import LoopConfig


@dataclass(frozen=True)
class BatchSettings:
    """The model and the :class:`LoopConfig` decide what an item's result is:
    a resume with other values would mix two experiments in one store, so
    they must match (or be forced). The rest says how the batch ran and is
    free to change between sessions."""

    model: str
    config: LoopConfig = field(default_factory=LoopConfig)
    concurrency: int = 8
    execution_concurrency: int = 8
    engine: str = "local"

    def to_json(self) -> dict[str, Any]:
        return jsondata.to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchSettings:
        return jsondata.from_json(cls, data, config=LoopConfig.from_json)

    def differences(self, stored: BatchSettings) -> list[str]:
        """Human-readable differences in the result-affecting settings."""
        model = [f"model: stored {stored.model!r}, now {self.model!r}"] if stored.model != self.model else []
        return model + self.config.differences(stored.config)
