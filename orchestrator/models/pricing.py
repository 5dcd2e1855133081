"""Cost estimates from token counts, with a price table the user can replace.

Prices are US dollars per million tokens. Tool-use prompt tokens are billed
as input and thinking tokens as output, as Gemini bills them. The defaults are
Google's published paid-tier list prices for prompts up to 200k tokens (2025);
they change, so pass your own table (``PriceTable.from_json``) when it matters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..types import Usage


@dataclass(frozen=True)
class ModelPrice:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, usage: Usage) -> float:
        inputs = usage.input_tokens + usage.tool_tokens
        outputs = usage.output_tokens + usage.thoughts_tokens
        return (inputs * self.input_per_mtok + outputs * self.output_per_mtok) / 1_000_000


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name; the longest matching prefix wins, so
    ``gemini-2.5-flash-lite`` is not priced as ``gemini-2.5-flash``."""

    prices: dict[str, ModelPrice] = field(default_factory=dict)

    def price_for(self, model: str) -> ModelPrice | None:
        name = model.removeprefix("models/")
        matches = [prefix for prefix in self.prices if name.startswith(prefix)]
        return self.prices[max(matches, key=len)] if matches else None

    def cost(self, model: str, usage: Usage) -> float | None:
        """The estimated cost, or None for a model the table does not know."""
        price = self.price_for(model)
        return price.cost(usage) if price else None

    def to_json(self) -> dict[str, Any]:
        return {name: {"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok}
                for name, p in self.prices.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PriceTable":
        prices = {}
        for name, entry in data.items():
            try:
                prices[name] = ModelPrice(float(entry["input_per_mtok"]), float(entry["output_per_mtok"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"price table entry {name!r} needs numeric input_per_mtok and output_per_mtok ({exc})"
                ) from None
        return cls(prices)

    @classmethod
    def load(cls, path: str | Path) -> "PriceTable":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"price table {str(path)!r} cannot be read: {exc}") from None
        try:
            return cls.from_json(data)
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"price table {str(path)!r}: {exc}") from None


GEMINI_PRICES = PriceTable({
    "gemini-2.5-pro": ModelPrice(1.25, 10.00),
    "gemini-2.5-flash": ModelPrice(0.30, 2.50),
    "gemini-2.5-flash-lite": ModelPrice(0.10, 0.40),
    "gemini-2.0-flash": ModelPrice(0.10, 0.40),
    "gemini-2.0-flash-lite": ModelPrice(0.075, 0.30),
})
