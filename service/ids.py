"""Ids as people type and read them: a unique prefix of at least 8 characters stands for the
whole id (as git does with commits), and listings show each id as its shortest unique prefix.

A prefix is a range of the id's index: PostgreSQL orders a uuid by its bytes, which is the order
of its hex digits, so `726efc82` is every id from 726efc82-0000-... to 726efc82-ffff-...
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from models.tables import BatchItem, BatchJob, Conversation
from service.errors import BatchInputError, NotFoundError

MIN_PREFIX = 8
_HEX_DIGITS = 32
# Ids named in an "ambiguous" message; more are counted, not listed (the message stays one line).
_AMBIGUOUS_SHOWN = 3


class IdKind(enum.Enum):
    """What an id names, and the indexed column it is looked up in."""

    JOB = "job"
    CONVERSATION = "conversation"
    ITEM = "item"

    @property
    def column(self) -> ColumnElement[Any]:
        columns = {
            IdKind.JOB: BatchJob.__table__.c.id,
            IdKind.CONVERSATION: Conversation.__table__.c.conversation_id,  # the business key people use
            IdKind.ITEM: BatchItem.__table__.c.id,
        }
        return columns[self]

    @property
    def plural(self) -> str:
        return f"{self.value}s"


def _prefix_range(kind: IdKind, ref: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The lowest and highest id a prefix stands for; BatchInputError for one that is no prefix."""
    digits = ref.strip().lower().replace("-", "")
    if not digits or len(digits) > _HEX_DIGITS or any(c not in "0123456789abcdef" for c in digits):
        raise BatchInputError(f"{kind.value} id {ref!r} is not a valid UUID or a prefix of one")
    if len(digits) < MIN_PREFIX:
        raise BatchInputError(f"{kind.value} id {ref!r} is too short: give at least {MIN_PREFIX} characters of it")
    low = uuid.UUID(digits.ljust(_HEX_DIGITS, "0"))
    high = uuid.UUID(digits.ljust(_HEX_DIGITS, "f"))
    return low, high


async def resolve_id(
    session: AsyncSession, kind: IdKind, ref: str, visible: ColumnElement[bool] | None = None
) -> uuid.UUID:
    """The one id a full id or a unique prefix (>= 8 characters) names among the rows `visible`
    selects (all by default: a user's prefix must neither match nor name another's rows);
    BatchInputError, in one line, for a prefix that is too short, names nothing, or names several."""
    low, high = _prefix_range(kind, ref)
    column = kind.column
    if low == high:  # a whole id: the caller says whether it exists, as for any id
        return low
    named = column.between(low, high) if visible is None else and_(column.between(low, high), visible)
    matches = (await session.scalars(select(column).where(named).order_by(column).limit(_AMBIGUOUS_SHOWN + 1))).all()
    if not matches:
        raise NotFoundError(f"{kind.value} {ref} not found")
    if len(matches) == 1:
        return matches[0]
    count = await session.scalar(select(func.count()).select_from(column.table).where(named)) or len(matches)
    shown = ", ".join(str(match) for match in matches[:_AMBIGUOUS_SHOWN])
    more = ", ..." if count > _AMBIGUOUS_SHOWN else ""
    raise BatchInputError(f"{kind.value} id {ref} matches {count} {kind.plural}: {shown}{more}; give more characters")


def _common_length(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


def _shortest_unique(value: uuid.UUID, neighbours: Iterable[uuid.UUID | None]) -> str:
    """The shortest prefix of the id (>= MIN_PREFIX) that no neighbour shares, ending in a digit."""
    text = str(value)
    length = max([MIN_PREFIX, *(_common_length(text, str(n)) + 1 for n in neighbours if n is not None)])
    if text[length - 1] == "-":
        length += 1
    return text[:length]


async def short_ids(session: AsyncSession, kind: IdKind, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each id's shortest unique prefix among all ids of its kind (not only those listed): the
    prefix a person copies from a listing names the same row in any command. Its neighbours in
    id order are the only ids that can share its longest prefix: two index probes per id, in one
    statement (10,000 items are one round trip)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    column = kind.column
    listed = func.unnest(cast(wanted, ARRAY(PG_UUID(as_uuid=True)))).table_valued("id").render_derived(name="listed")
    before = select(column).where(column < listed.c.id).order_by(column.desc()).limit(1).scalar_subquery()
    after = select(column).where(column > listed.c.id).order_by(column).limit(1).scalar_subquery()
    rows = (await session.execute(select(listed.c.id, before, after))).all()
    return {value: _shortest_unique(value, (low, high)) for value, low, high in rows}
