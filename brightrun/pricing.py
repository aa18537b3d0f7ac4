"""Token prices per model, from a settings file, turning usage into dollars."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

DEFAULT_PRICES_FILE = Path(__file__).with_name("model_prices.json")
_PER_MILLION = 1_000_000


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float


class PriceTable:
    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = prices

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        raw = json.loads((path or DEFAULT_PRICES_FILE).read_text())
        return cls({model: ModelPrice.model_validate(price) for model, price in raw.items() if not model.startswith("_")})

    def price_of(self, model: str) -> ModelPrice:
        """Exact name first, then the longest listed name the model starts with (dated snapshots)."""
        if model in self._prices:
            return self._prices[model]
        matches = [name for name in self._prices if model.startswith(name)]
        if not matches:
            raise KeyError(f"no price for model {model!r}: add it to the price file (MODEL_PRICES_FILE)")
        return self._prices[max(matches, key=len)]

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int, cache_write_tokens: int, cache_read_tokens: int) -> float:
        price = self.price_of(model)
        return (
            input_tokens * price.input
            + output_tokens * price.output
            + cache_write_tokens * price.cache_write
            + cache_read_tokens * price.cache_read
        ) / _PER_MILLION
