"""The conversation document Claude must return, and the validation it must pass."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, Field, model_validator

MIN_TURNS = 4


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class ConversationMetadata(BaseModel):
    persona: str = Field(min_length=1)
    emotional_arc: str = Field(min_length=1)
    training_topic: str = Field(min_length=1)
    tier: str = Field(min_length=1)


class ConversationDocument(BaseModel):
    """What the model returns as JSON: a titled, alternating conversation plus metadata."""

    title: str = Field(min_length=1)
    metadata: ConversationMetadata
    turns: list[Turn] = Field(min_length=MIN_TURNS)

    @model_validator(mode="after")
    def _alternating_from_user(self) -> ConversationDocument:
        if self.turns[0].role != "user":
            raise ValueError("the first turn must be the user's")
        for index, (previous, current) in enumerate(itertools.pairwise(self.turns), start=1):
            if previous.role == current.role:
                raise ValueError(f"turn {index} repeats role {current.role!r}: turns must alternate")
        return self
