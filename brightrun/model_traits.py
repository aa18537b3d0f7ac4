"""What a model does that the engine must plan for, beside its price: the shortest prompt prefix
it caches, and whether it thinks (thinking tokens are output tokens: they spend max_tokens)."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

TRAITS_FILE = Path(__file__).with_name("model_traits.json")
# A dated snapshot of a listed model: `claude-sonnet-4-5-20250929` has the traits of `claude-sonnet-4-5`.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{8}$")


class Thinking(StrEnum):
    NONE = "none"  # only when the request asks for it; the engine never does
    ADAPTIVE = "adaptive"  # on by default, as much as the model decides
    ALWAYS = "always"  # cannot be turned off


# Output tokens added to every tier's max_tokens for a model that thinks, so that thinking does
# not cut the conversation off (the stand-in thinks 4,000 and 8,000 tokens; real thinking varies).
THINKING_RESERVE_TOKENS = {Thinking.NONE: 0, Thinking.ADAPTIVE: 8_000, Thinking.ALWAYS: 16_000}
# An unlisted model: Sonnet's documented minimum, and no thinking assumed.
DEFAULT_CACHE_MIN_TOKENS = 1024


class ModelTraits(BaseModel):
    cache_min_tokens: int = Field(default=DEFAULT_CACHE_MIN_TOKENS, gt=0)
    thinking: Thinking = Thinking.NONE

    @property
    def max_tokens_reserve(self) -> int:
        return THINKING_RESERVE_TOKENS[self.thinking]


@lru_cache(maxsize=1)
def _table() -> dict[str, ModelTraits]:
    raw = json.loads(TRAITS_FILE.read_text())
    return {model: ModelTraits.model_validate(traits) for model, traits in raw.items() if not model.startswith("_")}


def traits_of(model: str) -> ModelTraits:
    """The model's traits, its base model's for a dated snapshot, the defaults when unlisted."""
    table = _table()
    for name in (model, _SNAPSHOT_SUFFIX.sub("", model)):
        if name in table:
            return table[name]
    return ModelTraits()


def estimated_tokens(text: str) -> int:
    """About four characters a token: what the stand-in counts, and what `status` compares with a
    model's cache minimum (Claude's tokenizers give a few tens of percent more for English)."""
    return max(1, len(text) // 4) if text else 0
