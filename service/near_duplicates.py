"""A conversation beside the earlier one it nearly repeats, with the differences marked: words
only in the earlier one, words only in this one, and the words they share."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.storage import Storage
from service.access import NotFoundError, Owner
from service.review import show_conversation

Mark = Literal["same", "removed", "added"]


class Segment(BaseModel):
    mark: Mark
    text: str


class TurnPair(BaseModel):
    role: str
    earlier: list[Segment]
    this: list[Segment]


class NearDuplicatePair(BaseModel):
    earlier_id: str
    earlier_title: str
    turns: list[TurnPair]


def compare_turns(earlier: list[dict[str, Any]], this: list[dict[str, Any]]) -> list[TurnPair]:
    """Turn by turn, word by word: what each side has that the other has not."""
    pairs = []
    for index in range(max(len(earlier), len(this))):
        left = earlier[index] if index < len(earlier) else {"role": "", "content": ""}
        right = this[index] if index < len(this) else {"role": "", "content": ""}
        left_words, right_words = str(left["content"]).split(" "), str(right["content"]).split(" ")
        left_segments: list[Segment] = []
        right_segments: list[Segment] = []
        matcher = difflib.SequenceMatcher(a=left_words, b=right_words, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                left_segments.append(Segment(mark="same", text=" ".join(left_words[i1:i2]) + " "))
                right_segments.append(Segment(mark="same", text=" ".join(right_words[j1:j2]) + " "))
                continue
            if i2 > i1:
                left_segments.append(Segment(mark="removed", text=" ".join(left_words[i1:i2]) + " "))
            if j2 > j1:
                right_segments.append(Segment(mark="added", text=" ".join(right_words[j1:j2]) + " "))
        pairs.append(TurnPair(role=str(right["role"] or left["role"]), earlier=left_segments, this=right_segments))
    return pairs


async def near_duplicate_pair(
    sessions: async_sessionmaker, storage: Storage, owner: Owner, shown: dict[str, Any]
) -> NearDuplicatePair | None:
    """The shown conversation beside the earlier one it nearly repeats; None when it repeats none
    (or the earlier one is not the owner's to see)."""
    earlier_id = shown.get("near_duplicate_of")
    if not earlier_id:
        return None
    try:
        earlier = await show_conversation(sessions, storage, owner, str(earlier_id))
    except NotFoundError:
        return None
    return NearDuplicatePair(
        earlier_id=str(earlier_id), earlier_title=earlier["title"], turns=compare_turns(earlier["turns"], shown["turns"])
    )
