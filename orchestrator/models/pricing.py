"""Cost estimates from token counts, with a price table the user can replace.

Prices are US dollars per million tokens. Tool-use prompt tokens are billed
as input and thinking tokens as output, as Gemini bills them; prompt-cache
reads and writes at their own rates where a price gives them (else as input).
The defaults are Google's and Anthropic's published list prices (2025; Gemini
for prompts up to 200k tokens, Anthropic's 5-minute cache writes); they
change, so pass your own table (``PriceTable.from_json``) when it matters.
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
    cache_read_per_mtok: float | None = None  # None: cached tokens cost as input
    cache_write_per_mtok: float | None = None

    def cost(self, usage: Usage) -> float:
        read = usage.cache_read_tokens if self.cache_read_per_mtok is not None else 0
        write = usage.cache_write_tokens if self.cache_write_per_mtok is not None else 0
        inputs = usage.input_tokens + usage.tool_tokens - read - write
        outputs = usage.output_tokens + usage.thoughts_tokens
        total = inputs * self.input_per_mtok + outputs * self.output_per_mtok
        total += read * (self.cache_read_per_mtok or 0.0) + write * (self.cache_write_per_mtok or 0.0)
        return total / 1_000_000

    def to_json(self) -> dict[str, float]:
        data = {"input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok}
        for name in ("cache_read_per_mtok", "cache_write_per_mtok"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data


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
        return {name: price.to_json() for name, price in self.prices.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PriceTable:
        prices = {}
        for name, entry in data.items():
            try:
                cache = {k: float(entry[k]) for k in ("cache_read_per_mtok", "cache_write_per_mtok") if k in entry}
                prices[name] = ModelPrice(float(entry["input_per_mtok"]), float(entry["output_per_mtok"]), **cache)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"price table entry {name!r} needs numeric input_per_mtok and output_per_mtok ({exc})"
                ) from None
        return cls(prices)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"price table {str(path)!r} cannot be read: {exc}") from None
        try:
            return cls.from_json(data)
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"price table {str(path)!r}: {exc}") from None


GEMINI_PRICES = PriceTable(
    {
        "gemini-2.5-pro": ModelPrice(1.25, 10.00),
        "gemini-2.5-flash": ModelPrice(0.30, 2.50),
        "gemini-2.5-flash-lite": ModelPrice(0.10, 0.40),
        "gemini-2.0-flash": ModelPrice(0.10, 0.40),
        "gemini-2.0-flash-lite": ModelPrice(0.075, 0.30),
    }
)

# Cache reads cost 0.1x the input price, 5-minute cache writes 1.25x.
ANTHROPIC_PRICES = PriceTable(
    {
        "claude-opus-4-5": ModelPrice(5.00, 25.00, 0.50, 6.25),
        "claude-opus-4": ModelPrice(15.00, 75.00, 1.50, 18.75),
        "claude-sonnet-4": ModelPrice(3.00, 15.00, 0.30, 3.75),
        "claude-3-7-sonnet": ModelPrice(3.00, 15.00, 0.30, 3.75),
        "claude-haiku-4-5": ModelPrice(1.00, 5.00, 0.10, 1.25),
        "claude-3-5-haiku": ModelPrice(0.80, 4.00, 0.08, 1.00),
    }
)
