"""Database work of jobs and items. Every write is idempotent: a retried attempt changes nothing
twice. Each change writes its line of the job's log in the same transaction."""

from __future__ import annotations

import uuid
from typing import cast

from sqlalchemy import String, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.data_errors import classify_data_errors
from activities.errors import (
    CATALOG_ROW_MISSING,
    ITEM_ALREADY_LINKED,
    ITEM_NOT_FOUND,
    ITEM_UNREPORTED,
    JOB_NOT_FOUND,
    permanent,
)
from brightrun.logs import get_logger
from brightrun.storage import Storage, conversation_prefixes, job_log_key
from models.enums import DeliveryMode, ErrorPolicy, ItemStatus, JobStatus, Tier
from models.messages import (
    NIL_UUID,
    CancelQueuedItems,
    FinishItemInput,
    ItemFinished,
    ItemPage,
    ItemPageRequest,
    ItemRef,
    ItemWork,
    JobCounters,
    JobPlan,
    JobStatusChange,
    JudgePlan,
    LinkConversationInput,
    LinkedConversation,
    RecordedItems,
    TokenUsage,
    UnreportedItems,
)
from models.tables import (
    BatchItem,
    BatchJob,
    BatchJobEvent,
    Conversation,
    EmotionalArc,
    MessageBatchRequest,
    Persona,
    TrainingTopic,
)
from models.workflow_ids import item_conversation_id

log = get_logger(__name__)
# A type is ours (activities/errors.py) or an exception's class name: cut, not refused, if longer.
_ERROR_TYPE_MAX_LENGTH = cast(String, BatchItem.__table__.c.error_type.type).length
FINAL_ITEM_STATUSES = [s.value for s in ItemStatus if s.is_final]
FINAL_JOB_STATUSES = [s.value for s in JobStatus if s.is_final]

# Which job counters an item's final status adds to.
_COUNTERS = {
    ItemStatus.COMPLETED: ("completed_items", "successful_items"),
    ItemStatus.FAILED: ("completed_items", "failed_items"),
    ItemStatus.CANCELLED: ("cancelled_items",),
}

_CANCEL_QUEUED_ITEMS = text(
    """
    WITH cancelled AS (
        UPDATE batch_items SET status = :cancelled, processed_at = now(), updated_at = now()
        WHERE batch_job_id = :job_id AND status = :queued AND id <> ALL(:in_flight)
        RETURNING id, position
    ), logged AS (
        INSERT INTO batch_job_events (batch_job_id, batch_item_id, line)
        SELECT :job_id, id, 'item ' || position || ' (' || id || ') cancelled before it started' FROM cancelled
    )
    SELECT count(*) FROM cancelled
    """
).bindparams(bindparam("in_flight", type_=ARRAY(PG_UUID(as_uuid=True))))

# The catalog rows an item names, by its parameter key.
_CATALOG_REFERENCES = (
    ("persona", Persona, "persona_id"),
    ("emotional arc", EmotionalArc, "emotional_arc_id"),
    ("training topic", TrainingTopic, "training_topic_id"),
)


async def _log(session: AsyncSession, job_id: uuid.UUID, line: str, item_id: uuid.UUID | None = None) -> None:
    await session.execute(insert(BatchJobEvent).values(batch_job_id=job_id, batch_item_id=item_id, line=line))


async def _names(session: AsyncSession, table: type[Persona | EmotionalArc], ids: set[str]) -> dict[str, str]:
    """Catalog names by id (as the item parameters hold them, strings)."""
    rows = await session.execute(select(table.id, table.name).where(table.id.in_([uuid.UUID(i) for i in ids])))
    return {str(row_id): name for row_id, name in rows}


def _item_line(position: int, item_id: uuid.UUID, what: str) -> str:
    return f"item {position} ({item_id}) {what}"


def _counters_of(job: BatchJob) -> JobCounters:
    return JobCounters(
        completed=job.completed_items,
        successful=job.successful_items,
        failed=job.failed_items,
        cancelled=job.cancelled_items,
        judged=job.judged_items,
    )


def job_judge_plan(job: BatchJob) -> JudgePlan | None:
    """The rubric version the job was launched to judge with (shared_parameters["judge"])."""
    judge = job.shared_parameters.get("judge")
    return JudgePlan.model_validate(judge) if judge else None


def _counter_columns(counters: JobCounters) -> dict[str, int]:
    return {
        "completed_items": counters.completed,
        "successful_items": counters.successful,
        "failed_items": counters.failed,
        "cancelled_items": counters.cancelled,
    }


async def _counters_from_rows(session: AsyncSession, job_id: uuid.UUID) -> JobCounters:
    """The job's counters as its item rows hold them (an index scan on (batch_job_id, status))."""
    by_status = dict(
        (
            await session.execute(
                select(BatchItem.status, func.count()).where(BatchItem.batch_job_id == job_id).group_by(BatchItem.status)
            )
        ).all()
    )
    successful, failed = by_status.get(ItemStatus.COMPLETED.value, 0), by_status.get(ItemStatus.FAILED.value, 0)
    return JobCounters(
        completed=successful + failed,
        successful=successful,
        failed=failed,
        cancelled=by_status.get(ItemStatus.CANCELLED.value, 0),
    )


async def _recorded_outcome(session: AsyncSession, item: BatchItem) -> ItemFinished:
    """What a final row holds, as the outcome its item reports (its usage is counted already)."""
    conversation_id = None
    if item.conversation_id is not None:
        conversation_id = await session.scalar(
            select(Conversation.conversation_id).where(Conversation.id == item.conversation_id)
        )
    return ItemFinished(
        item_id=item.id,
        status=ItemStatus(item.status),
        error_message=item.error_message,
        error_type=item.error_type,
        conversation_id=conversation_id,
    )


async def _record_outcome(session: AsyncSession, request: FinishItemInput) -> ItemStatus:
    """The guarded write of an item's end: the first final status wins, the job's counters and
    usage grow with it in the same transaction, and the log gets its line."""
    outcome = request.outcome
    position = await session.scalar(
        update(BatchItem)
        .where(BatchItem.id == outcome.item_id, BatchItem.status.not_in(FINAL_ITEM_STATUSES))
        .values(
            status=outcome.status.value,
            error_message=outcome.error_message,
            error_type=outcome.error_type and outcome.error_type[:_ERROR_TYPE_MAX_LENGTH],
            processed_at=request.finished_at,
            progress=100,
            # Tokens and cost of all the item's calls, and the rate-limit budget they left.
            usage={**outcome.usage.model_dump(), "rate_limit": request.rate_limit},
        )
        .returning(BatchItem.position)
    )
    if position is None:
        return ItemStatus((await session.scalars(select(BatchItem.status).where(BatchItem.id == outcome.item_id))).one())
    counters = {name: getattr(BatchJob, name) + 1 for name in _COUNTERS[outcome.status]}
    await session.execute(
        update(BatchJob)
        .where(BatchJob.id == request.job_id)
        .values(
            **counters,
            input_tokens=BatchJob.input_tokens + outcome.usage.input_tokens,
            output_tokens=BatchJob.output_tokens + outcome.usage.output_tokens,
            cache_write_tokens=BatchJob.cache_write_tokens + outcome.usage.cache_creation_input_tokens,
            cache_read_tokens=BatchJob.cache_read_tokens + outcome.usage.cache_read_input_tokens,
            cost_usd=BatchJob.cost_usd + outcome.usage.cost_usd,
        )
    )
    what = {
        ItemStatus.COMPLETED: f"succeeded: conversation {outcome.conversation_id}",
        ItemStatus.FAILED: f"failed: {outcome.error_message}",
        ItemStatus.CANCELLED: f"cancelled: {outcome.error_message}" if outcome.error_message else "cancelled",
    }[outcome.status]
    await _log(session, request.job_id, _item_line(position, outcome.item_id, what), outcome.item_id)
    return outcome.status


class JobActivities:
    def __init__(self, sessions: async_sessionmaker, storage: Storage) -> None:
        self._sessions = sessions
        self._storage = storage

    @activity.defn(name="start_job")
    @classify_data_errors
    async def start_job(self, job_id: uuid.UUID) -> JobPlan:
        async with self._sessions.begin() as session:
            job = await session.get(BatchJob, job_id, with_for_update=True)
            if job is None:
                raise permanent(f"batch job {job_id} does not exist", JOB_NOT_FOUND)
            await self._check_catalog(session, job_id)
            if job.status == JobStatus.QUEUED:
                job.status = JobStatus.PROCESSING.value
                job.started_at = job.started_at or func.now()
                await _log(
                    session,
                    job_id,
                    f"job processing: {job.total_items - job.completed_items - job.cancelled_items} items to run, "
                    f"concurrency {job.concurrent_processing}, on error: {job.error_handling}",
                )
            await session.flush()
            await session.refresh(job)
            return JobPlan(
                job_id=job.id,
                status=JobStatus(job.status),
                total_items=job.total_items,
                concurrency=job.concurrent_processing,
                error_policy=ErrorPolicy(job.error_handling),
                mode=DeliveryMode(job.mode),
                priority=job.priority,
                user_id=job.created_by,
                counters=_counters_of(job),
                usage=TokenUsage(
                    input_tokens=job.input_tokens,
                    output_tokens=job.output_tokens,
                    cache_creation_input_tokens=job.cache_write_tokens,
                    cache_read_input_tokens=job.cache_read_tokens,
                    cost_usd=job.cost_usd,
                ),
                started_at=job.started_at,
                max_cost_usd=job.max_cost_usd,
                estimated_item_cost_usd=(job.estimate or {}).get("max_item_cost_usd", 0.0),
                judge=job_judge_plan(job),
                unfinished_items=(
                    await session.scalars(
                        select(BatchItem.id).where(
                            BatchItem.batch_job_id == job_id, BatchItem.status == ItemStatus.PROCESSING.value
                        )
                    )
                ).all(),
            )

    async def _check_catalog(self, session: AsyncSession, job_id: uuid.UUID) -> None:
        """A job whose queued items name a deleted catalog row cannot run at all."""
        for kind, table, key in _CATALOG_REFERENCES:
            named = set(
                (
                    await session.scalars(
                        select(BatchItem.parameters[key].astext)
                        .where(BatchItem.batch_job_id == job_id, BatchItem.status == ItemStatus.QUEUED.value)
                        .distinct()
                    )
                ).all()
            )
            existing = {str(i) for i in (await session.scalars(select(table.id).where(table.id.in_(named)))).all()}
            if named - existing:
                missing = ", ".join(sorted(named - existing))
                raise permanent(f"the job cannot run: {kind} {missing} was deleted from the catalog", CATALOG_ROW_MISSING)

    @activity.defn(name="list_queued_items")
    @classify_data_errors
    async def list_queued_items(self, request: ItemPageRequest) -> ItemPage:
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(BatchItem.id, BatchItem.position, BatchItem.topic, BatchItem.parameters)
                    .where(
                        BatchItem.batch_job_id == request.job_id,
                        BatchItem.position >= request.from_position,
                        BatchItem.status == ItemStatus.QUEUED.value,
                    )
                    .order_by(BatchItem.position)
                    .limit(request.limit)
                )
            ).all()
            persona_names = await _names(session, Persona, {row.parameters["persona_id"] for row in rows})
            arc_names = await _names(session, EmotionalArc, {row.parameters["emotional_arc_id"] for row in rows})
            return ItemPage(
                items=[
                    ItemRef(
                        item_id=row.id,
                        position=row.position,
                        summary=" · ".join(
                            (
                                persona_names.get(row.parameters["persona_id"], "?"),
                                arc_names.get(row.parameters["emotional_arc_id"], "?"),
                                row.topic or "?",
                            )
                        ),
                    )
                    for row in rows
                ]
            )

    @activity.defn(name="begin_item")
    @classify_data_errors
    async def begin_item(self, item_id: uuid.UUID) -> ItemWork:
        async with self._sessions.begin() as session:
            item = await session.get(BatchItem, item_id, with_for_update=True)
            if item is None:
                raise permanent(f"batch item {item_id} does not exist", ITEM_NOT_FOUND)
            if item.status == ItemStatus.QUEUED:
                item.status = ItemStatus.PROCESSING.value
                item.error_message = item.error_type = None
                item.attempts += 1  # runs of the item: 1, and one more for each `retry` of it
                await _log(session, item.batch_job_id, _item_line(item.position, item.id, "started"), item.id)
            parameters = item.parameters
            template_id = parameters.get("template_id")
            return ItemWork(
                item_id=item.id,
                tier=Tier(item.tier),
                persona_id=parameters["persona_id"],
                emotional_arc_id=parameters["emotional_arc_id"],
                training_topic_id=parameters["training_topic_id"],
                template_id=None if template_id in (None, str(NIL_UUID)) else template_id,
                sample=parameters.get("sample", 1),
                recorded=await _recorded_outcome(session, item) if ItemStatus(item.status).is_final else None,
                batch_requests_staged=await session.scalar(
                    select(func.count()).where(MessageBatchRequest.batch_item_id == item.id)
                ),
            )

    @activity.defn(name="link_conversation")
    @classify_data_errors
    async def link_conversation(self, request: LinkConversationInput) -> LinkedConversation:
        generated = request.generations[-1]  # the call whose answer was stored
        usage = sum((g.usage for g in request.generations), TokenUsage())
        async with self._sessions.begin() as session:
            item = await session.get(BatchItem, request.item_id, with_for_update=True)
            if item is None:
                raise permanent(f"batch item {request.item_id} does not exist", ITEM_NOT_FOUND)
            if item.conversation_id is not None:
                # Linked already: by an earlier attempt of this step (the same conversation), or by
                # another run of the item, whose link is never re-pointed.
                linked = await session.get(Conversation, item.conversation_id)
                if linked.conversation_id != request.conversation_id:
                    raise permanent(
                        f"batch item {item.id} is already linked to conversation {linked.conversation_id}; "
                        f"conversation {request.conversation_id} is not linked",
                        ITEM_ALREADY_LINKED,
                    )
                return LinkedConversation(conversation_pk=linked.id)
            if ItemStatus(item.status).is_final:
                # Recorded ended while this step ran (its workflow was taken as unreported): the
                # row keeps that outcome, and no conversation is linked beside it. The row lock
                # held since the read makes this the guard.
                log.warning("the item ended before its conversation was linked", item_id=str(item.id),
                            status=item.status, conversation_id=str(request.conversation_id))
                return LinkedConversation(conversation_pk=None, recorded=await _recorded_outcome(session, item))
            # The business key is fixed before the first attempt, so a retry finds its own row.
            conversation_pk = await session.scalar(
                upsert(Conversation)
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
                    quality_score=request.stored.quality_score,
                    # The call whose answer this is says who wrote it; NULL (unknown) for a reply
                    # recorded before calls said it.
                    provider=generated.provider,
                    provider_host=generated.provider_host,
                    generation_metadata={
                        "model": generated.model,
                        "stop_reason": generated.stop_reason,
                        "latency_ms": sum(g.latency_ms for g in request.generations),
                        # Activity attempts of every call, and whether a repair was needed.
                        "attempts": sum(g.attempt for g in request.generations),
                        "repaired": len(request.generations) > 1,
                        "usage": usage.model_dump(),
                        "rate_limit": generated.rate_limit,
                    },
                )
                .on_conflict_do_update(index_elements=["conversation_id"], set_={"updated_at": func.now()})
                .returning(Conversation.id)
            )
            # The foreign key targets conversations.id, the primary key, never the business key.
            item.conversation_id = conversation_pk
        return LinkedConversation(conversation_pk=conversation_pk)

    @activity.defn(name="finish_item")
    @classify_data_errors
    async def finish_item(self, request: FinishItemInput) -> ItemStatus:
        """Record an item's final status once; returns the status the row ends with (the first
        final one recorded, when the item had already ended)."""
        async with self._sessions.begin() as session:
            return await _record_outcome(session, request)

    @activity.defn(name="record_unreported_items")
    @classify_data_errors
    async def record_unreported_items(self, request: UnreportedItems) -> RecordedItems:
        """Record items that will never report, each unless its row is final already; returns
        the outcome every row ends with, for the job to count. An item whose conversation was
        linked before its run ended lost only its report: it is recorded completed, with it."""
        # What a run stored before it could link it (its reply, its conversation) has no row to
        # point at it: removed before the rows end, so a retried attempt still finds them open.
        async with self._sessions() as session:
            user_id = await session.scalar(select(BatchJob.created_by).where(BatchJob.id == request.job_id))
            open_items = (
                await session.execute(
                    select(BatchItem.id, BatchItem.conversation_id.is_not(None)).where(
                        BatchItem.id.in_(request.reasons), BatchItem.status.not_in(FINAL_ITEM_STATUSES)
                    )
                )
            ).all()
        abandoned = [item_id for item_id, is_linked in open_items if not is_linked]
        linked = {item_id for item_id, is_linked in open_items if is_linked}
        if abandoned and user_id is not None:
            await self._delete_conversation_objects(user_id, abandoned)
        recorded = []
        async with self._sessions.begin() as session:
            for item_id, reason in request.reasons.items():
                if item_id in linked:
                    outcome = ItemFinished(item_id=item_id, status=ItemStatus.COMPLETED)
                else:
                    error_type = ITEM_UNREPORTED if request.status == ItemStatus.FAILED else None
                    outcome = ItemFinished(item_id=item_id, status=request.status, error_message=reason, error_type=error_type)
                finish = FinishItemInput(job_id=request.job_id, finished_at=request.finished_at, outcome=outcome)
                await _record_outcome(session, finish)
                item = await session.get(BatchItem, item_id, populate_existing=True)
                if item is not None:
                    recorded.append(await _recorded_outcome(session, item))
        return RecordedItems(items=recorded)

    async def _delete_conversation_objects(self, user_id: str, item_ids: list[uuid.UUID]) -> None:
        bucket = self._storage.conversation_bucket
        keys = [
            key
            for item_id in item_ids
            for prefix in conversation_prefixes(user_id, item_conversation_id(item_id))
            for key in await self._storage.list_keys(bucket, prefix)
        ]
        if keys:
            await self._storage.delete_keys(bucket, keys)

    @activity.defn(name="cancel_queued_items")
    @classify_data_errors
    async def cancel_queued_items(self, request: CancelQueuedItems) -> int:
        """Mark every item that never started `cancelled`, except those in flight (their own
        report ends them, so none is counted twice); returns how many rows this changed."""
        job_id = request.job_id
        async with self._sessions.begin() as session:
            values = {
                "job_id": job_id,
                "cancelled": ItemStatus.CANCELLED.value,
                "queued": ItemStatus.QUEUED.value,
                "in_flight": request.in_flight,
            }
            count = await session.scalar(_CANCEL_QUEUED_ITEMS, values)
            if count:
                await session.execute(
                    update(BatchJob).where(BatchJob.id == job_id).values(cancelled_items=BatchJob.cancelled_items + count)
                )
            return count

    @activity.defn(name="set_job_status")
    @classify_data_errors
    async def set_job_status(self, change: JobStatusChange) -> JobCounters:
        """Mirror a transition the workflow made; an ended job's row is never reopened. When the
        job ends its counters are recounted from the item rows; returns the row's counters."""
        async with self._sessions.begin() as session:
            final = change.status.is_final
            counted = await _counters_from_rows(session, change.job_id) if final else None
            changed = await session.scalar(
                update(BatchJob)
                .where(BatchJob.id == change.job_id, BatchJob.status.not_in(FINAL_JOB_STATUSES))
                .values(
                    status=change.status.value,
                    error_message=change.error_message,
                    pause_reason=change.pause_reason,
                    completed_at=func.now() if final else None,
                    estimated_time_remaining=0 if final else BatchJob.estimated_time_remaining,
                    **(_counter_columns(counted) if counted else {}),
                )
                .returning(BatchJob.id)
            )
            if changed is not None:
                why = change.error_message or change.pause_reason
                reason = f": {why}" if why else ""
                await _log(session, change.job_id, f"job {change.status.value}{reason}")
            job = await session.get(BatchJob, change.job_id, populate_existing=True)
            if job is None:
                raise permanent(f"batch job {change.job_id} does not exist", JOB_NOT_FOUND)
            return _counters_of(job)

    @activity.defn(name="write_job_log")
    @classify_data_errors
    async def write_job_log(self, job_id: uuid.UUID) -> int:
        """Render the job's events to `batch-logs/{job_id}/log.txt`; returns the line count."""
        async with self._sessions() as session:
            events = (await session.execute(BatchJobEvent.of_job(job_id))).all()
        body = "".join(f"{BatchJobEvent.text_line(at, line)}\n" for at, line in events)
        await self._storage.put_bytes(self._storage.log_bucket, job_log_key(job_id), body.encode(), "text/plain; charset=utf-8")
        return len(events)
