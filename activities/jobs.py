"""Database work of jobs and items. Every write is idempotent: a retried attempt changes nothing twice."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity

from activities.errors import ITEM_NOT_FOUND, JOB_NOT_FOUND, permanent
from models.enums import ErrorPolicy, ItemStatus, JobStatus, Tier
from models.messages import (
    NIL_UUID,
    FinishItemInput,
    FinishJobInput,
    ItemPage,
    ItemPageRequest,
    ItemRef,
    ItemWork,
    JobPlan,
    LinkConversationInput,
    LinkedConversation,
)
from models.tables import BatchItem, BatchJob, Conversation

FINAL_ITEM_STATUSES = [s.value for s in ItemStatus if s.is_final]

# Which job counter an item's final status adds to.
_COUNTERS = {
    ItemStatus.COMPLETED: ("completed_items", "successful_items"),
    ItemStatus.FAILED: ("completed_items", "failed_items"),
    ItemStatus.CANCELLED: ("cancelled_items",),
}


class JobActivities:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    @activity.defn(name="start_job")
    async def start_job(self, job_id: uuid.UUID) -> JobPlan:
        async with self._sessions.begin() as session:
            job = await session.get(BatchJob, job_id, with_for_update=True)
            if job is None:
                raise permanent(f"batch job {job_id} does not exist", JOB_NOT_FOUND)
            if job.status == JobStatus.QUEUED:
                job.status = JobStatus.PROCESSING.value
                job.started_at = job.started_at or func.now()
            return JobPlan(
                job_id=job.id,
                status=JobStatus(job.status),
                total_items=job.total_items,
                concurrency=job.concurrent_processing,
                error_policy=ErrorPolicy(job.error_handling),
                user_id=job.created_by,
            )

    @activity.defn(name="list_queued_items")
    async def list_queued_items(self, request: ItemPageRequest) -> ItemPage:
        async with self._sessions() as session:
            rows = await session.execute(
                select(BatchItem.id, BatchItem.position)
                .where(
                    BatchItem.batch_job_id == request.job_id,
                    BatchItem.position >= request.from_position,
                    BatchItem.status == ItemStatus.QUEUED.value,
                )
                .order_by(BatchItem.position)
                .limit(request.limit)
            )
            return ItemPage(items=[ItemRef(item_id=item_id, position=position) for item_id, position in rows])

    @activity.defn(name="begin_item")
    async def begin_item(self, item_id: uuid.UUID) -> ItemWork:
        async with self._sessions.begin() as session:
            item = await session.get(BatchItem, item_id, with_for_update=True)
            if item is None:
                raise permanent(f"batch item {item_id} does not exist", ITEM_NOT_FOUND)
            if item.status == ItemStatus.QUEUED:
                item.status = ItemStatus.PROCESSING.value
                item.error_message = None
            parameters = item.parameters
            template_id = parameters.get("template_id")
            return ItemWork(
                item_id=item.id,
                tier=Tier(item.tier),
                persona_id=parameters["persona_id"],
                emotional_arc_id=parameters["emotional_arc_id"],
                training_topic_id=parameters["training_topic_id"],
                template_id=None if template_id in (None, str(NIL_UUID)) else template_id,
            )

    @activity.defn(name="link_conversation")
    async def link_conversation(self, request: LinkConversationInput) -> LinkedConversation:
        generated = request.generated
        async with self._sessions.begin() as session:
            # The business key is fixed before the first attempt, so a retry finds its own row.
            conversation_pk = await session.scalar(
                insert(Conversation)
                .values(
                    conversation_id=request.conversation_id,
                    batch_job_id=request.job_id,
                    created_by=request.user_id,
                    title=request.stored.title,
                    raw_storage_path=generated.raw_key,
                    final_storage_path=request.stored.final_key,
                    persona_id=request.work.persona_id,
                    emotional_arc_id=request.work.emotional_arc_id,
                    training_topic_id=request.work.training_topic_id,
                    template_id=request.template_id,
                    tier=request.work.tier.value,
                    turn_count=request.stored.turn_count,
                    generation_metadata={
                        "model": generated.model,
                        "stop_reason": generated.stop_reason,
                        "latency_ms": generated.latency_ms,
                        "attempts": generated.attempt,
                        "usage": generated.usage.model_dump(),
                    },
                )
                .on_conflict_do_update(index_elements=["conversation_id"], set_={"updated_at": func.now()})
                .returning(Conversation.id)
            )
            # The foreign key targets conversations.id, the primary key, never the business key.
            await session.execute(
                update(BatchItem).where(BatchItem.id == request.item_id).values(conversation_id=conversation_pk)
            )
        return LinkedConversation(conversation_pk=conversation_pk)

    @activity.defn(name="finish_item")
    async def finish_item(self, request: FinishItemInput) -> bool:
        """Record an item's final status once; returns False when it was already final."""
        async with self._sessions.begin() as session:
            changed = await session.scalar(
                update(BatchItem)
                .where(BatchItem.id == request.item_id, BatchItem.status.not_in(FINAL_ITEM_STATUSES))
                .values(
                    status=request.status.value,
                    error_message=request.error_message,
                    processed_at=request.finished_at,
                    progress=100,
                    usage=request.usage.model_dump(),
                )
                .returning(BatchItem.id)
            )
            if changed is None:
                return False
            counters = {name: getattr(BatchJob, name) + 1 for name in _COUNTERS[request.status]}
            await session.execute(
                update(BatchJob)
                .where(BatchJob.id == request.job_id)
                .values(
                    **counters,
                    input_tokens=BatchJob.input_tokens + request.usage.input_tokens,
                    output_tokens=BatchJob.output_tokens + request.usage.output_tokens,
                )
            )
            return True

    @activity.defn(name="finish_job")
    async def finish_job(self, request: FinishJobInput) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(BatchJob)
                .where(BatchJob.id == request.job_id)
                .values(
                    status=request.status.value,
                    error_message=request.error_message,
                    completed_at=func.now() if request.status.is_final else None,
                    estimated_time_remaining=0 if request.status.is_final else BatchJob.estimated_time_remaining,
                )
            )
