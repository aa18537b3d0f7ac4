"""Token prices per model, from one data file with its source and date (model_prices.json),
turning usage into dollars."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, Field

from models.messages import TokenUsage

DEFAULT_PRICES_FILE = Path(__file__).with_name("model_prices.json")
_PER_MILLION = 1_000_000
# Message Batches bill every token at half the online price; the discount stacks with caching.
BATCH_PRICE_FACTOR = 0.5
# A dated snapshot of a listed model: `claude-sonnet-4-5-20250929` is priced as `claude-sonnet-4-5`.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{8}$")


class Rates(BaseModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)  # 5-minute cache writes, what `cache_control: ephemeral` asks for
    cache_write_1h: float = Field(ge=0)  # 1-hour cache writes (`ttl: 1h`, what a Message Batch asks for)
    cache_read: float = Field(ge=0)


class LongPromptRates(Rates):
    """Rates for every token of a request whose prompt (input, cache writes and cache reads
    together) is longer than the threshold."""

    above_prompt_tokens: int = Field(gt=0)


class ModelPrice(Rates):
    long_prompt: LongPromptRates | None = None

    def cost_usd(self, usage: TokenUsage, batch: bool = False, one_hour_cache_writes: int | None = None) -> float:
        """`one_hour_cache_writes`: the 1-hour share of the cache writes, as the answer's
        cache_creation breakdown says; without it, online writes are 5-minute ones and a Message
        Batch's 1-hour ones (what batches ask for). In a batch every token costs half."""
        prompt = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        rates: Rates = self
        if self.long_prompt and prompt > self.long_prompt.above_prompt_tokens:
            rates = self.long_prompt
        if one_hour_cache_writes is None:
            one_hour_cache_writes = usage.cache_creation_input_tokens if batch else 0
        cost = (
            usage.input_tokens * rates.input
            + usage.output_tokens * rates.output
            + (usage.cache_creation_input_tokens - one_hour_cache_writes) * rates.cache_write
            + one_hour_cache_writes * rates.cache_write_1h
            + usage.cache_read_input_tokens * rates.cache_read
        ) / _PER_MILLION
        return cost * BATCH_PRICE_FACTOR if batch else cost


class PriceTable:
    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = prices

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The file maps model ids to prices; keys starting with `_` are notes."""
        raw = json.loads((path or DEFAULT_PRICES_FILE).read_text())
        return cls({model: ModelPrice.model_validate(price) for model, price in raw.items() if not model.startswith("_")})

    def price_of(self, model: str) -> ModelPrice:
        """The model's price, or its base model's for a dated snapshot; KeyError when unlisted."""
        for name in (model, _SNAPSHOT_SUFFIX.sub("", model)):
            if name in self._prices:
                return self._prices[name]
        raise KeyError(f"no price for model {model!r}: add it to the price file (MODEL_PRICES_FILE)")
