"""Catalog rows named by a person: by id, or by name in any case, with a suggestion for a typo."""

from __future__ import annotations

import difflib
import uuid
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.tables import EmotionalArc, Persona, TrainingTopic
from service.errors import BatchInputError

CatalogRow = TypeVar("CatalogRow", Persona, EmotionalArc, TrainingTopic)
# Names offered for an unknown one, at most.
_SUGGESTIONS = 3


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def catalog_row(session: AsyncSession, table: type[CatalogRow], kind: str, value: str) -> CatalogRow:
    """The active row a value names: its id, or its name in any case ("david chen"). An unknown
    name gets the closest names as a suggestion."""
    text = value.strip()
    as_id = _as_uuid(text)
    if as_id is not None:
        row = await session.get(table, as_id)
        if row is not None and row.is_active:
            return row
    named = (await session.scalars(select(table).where(func.lower(table.name) == text.lower(), table.is_active))).all()
    exact = [row for row in named if row.name == text]
    if exact or len(named) == 1:
        return (exact or named)[0]
    if named:
        names = " or ".join(repr(row.name) for row in named)
        raise BatchInputError(f"{kind} {value!r} could be {names}: give the name as written, or the id")
    active = {name.lower(): name for name in (await session.scalars(select(table.name).where(table.is_active))).all()}
    close = [active[name] for name in difflib.get_close_matches(text.lower(), active, n=_SUGGESTIONS)]
    if close:
        raise BatchInputError(f"unknown {kind} {value!r}: did you mean {' or '.join(repr(name) for name in close)}?")
    raise BatchInputError(f"unknown {kind} {value!r} (run `starter.py catalog` to list them)")
