"""A job's failed items counted by kind (the ApplicationError type of their last failure)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from models.enums import ItemStatus
from models.tables import BatchItem

UNKNOWN_KIND = "unknown"


class FailureKind(BaseModel):
    error_type: str
    count: int
    # One of its messages, for a person to act on.
    example: str | None


async def failures_by_kind(sessions: async_sessionmaker, job_id: uuid.UUID) -> list[FailureKind]:
    """Most frequent kind first."""
    kind = func.coalesce(BatchItem.error_type, UNKNOWN_KIND)
    query = (
        select(kind, func.count(), func.min(BatchItem.error_message))
        .where(BatchItem.batch_job_id == job_id, BatchItem.status == ItemStatus.FAILED.value)
        .group_by(kind)
        .order_by(func.count().desc(), kind)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return [FailureKind(error_type=error_type, count=count, example=example) for error_type, count, example in rows]
