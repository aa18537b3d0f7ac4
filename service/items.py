"""A job's items as an operator reads them (`starter.py items`), and its failures counted by kind
(`starter.py status`): why items failed, without SQL."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.enums import ItemStatus
from models.tables import BatchItem, BatchJob, Conversation, EmotionalArc, Persona, PromptTemplate, TrainingTopic
from service.errors import BatchInputError
from service.ids import IdKind, resolve_id

# The kind of a failure recorded before failures had types.
UNTYPED_FAILURE = "untyped"


class ItemListing(BaseModel):
    """One line of `starter.py items`."""

    item_id: uuid.UUID
    position: int
    status: ItemStatus
    attempts: int  # runs of the item: 1, and one more for each `retry` that ran it again
    persona: str | None  # None: the catalog row is gone
    emotional_arc: str | None
    training_topic: str
    template: str | None  # the template that wrote it, else the one asked for; None: auto-select
    sample: int
    error_type: str | None
    error_message: str | None
    conversation_id: uuid.UUID | None  # the business key, as `review show` takes it
    processed_at: datetime | None


class FailureKind(BaseModel):
    """The failed items of one error type: how many, and their most common message."""

    error_type: str
    count: int
    message: str
    other_messages: int  # distinct messages besides `message`

    @property
    def summary(self) -> str:
        """`10 claude_400: Claude API 400: prompt is too long`"""
        others = f" (and {self.other_messages} other messages)" if self.other_messages else ""
        return f"{self.count} {self.error_type}: {self.message}{others}"


def _parameter_id(key: str) -> ColumnElement[uuid.UUID]:
    return BatchItem.parameters[key].astext.cast(UUID(as_uuid=True))


async def job_id_of(session: AsyncSession, job_ref: str) -> uuid.UUID:
    """The job a full id or unique prefix names; BatchInputError when there is none."""
    job_id = await resolve_id(session, IdKind.JOB, job_ref)
    if await session.get(BatchJob, job_id) is None:
        raise BatchInputError(f"job {job_ref} not found")
    return job_id


async def list_items(
    sessions: async_sessionmaker, job_ref: str, status: ItemStatus | None = None
) -> list[ItemListing]:
    """The job's items in launch order, with the names of what they were made from."""
    template_id = func.coalesce(Conversation.template_id, _parameter_id("template_id"))
    query = (
        select(
            BatchItem,
            Persona.name,
            EmotionalArc.name,
            TrainingTopic.name,
            PromptTemplate.name,
            Conversation.conversation_id,
        )
        .outerjoin(Persona, Persona.id == _parameter_id("persona_id"))
        .outerjoin(EmotionalArc, EmotionalArc.id == _parameter_id("emotional_arc_id"))
        .outerjoin(TrainingTopic, TrainingTopic.id == _parameter_id("training_topic_id"))
        .outerjoin(Conversation, Conversation.id == BatchItem.conversation_id)
        .outerjoin(PromptTemplate, PromptTemplate.id == template_id)  # the nil UUID (auto-select) joins none
        .order_by(BatchItem.position)
    )
    async with sessions() as session:
        job_id = await job_id_of(session, job_ref)
        query = query.where(BatchItem.batch_job_id == job_id)
        if status is not None:
            query = query.where(BatchItem.status == status.value)
        rows = (await session.execute(query)).all()
    return [
        ItemListing(
            item_id=item.id,
            position=item.position,
            status=ItemStatus(item.status),
            attempts=item.attempts,
            persona=persona,
            emotional_arc=arc,
            training_topic=topic or item.topic,
            template=template,
            sample=item.parameters.get("sample", 1),
            error_type=item.error_type,
            error_message=item.error_message,
            conversation_id=conversation_id,
            processed_at=item.processed_at,
        )
        for item, persona, arc, topic, template, conversation_id in rows
    ]


async def failure_kinds(session: AsyncSession, job_id: uuid.UUID) -> list[FailureKind]:
    """The job's failed items grouped by error type, most frequent first."""
    error_type = func.coalesce(BatchItem.error_type, UNTYPED_FAILURE)
    rows = (
        await session.execute(
            select(
                error_type,
                func.count(),
                func.mode().within_group(BatchItem.error_message),
                func.count(BatchItem.error_message.distinct()),
            )
            .where(BatchItem.batch_job_id == job_id, BatchItem.status == ItemStatus.FAILED.value)
            .group_by(error_type)
            .order_by(func.count().desc(), error_type)
        )
    ).all()
    return [
        FailureKind(error_type=kind, count=count, message=message or "(no message)", other_messages=max(0, distinct - 1))
        for kind, count, message, distinct in rows
    ]
