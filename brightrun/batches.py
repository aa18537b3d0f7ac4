"""Creating batch jobs and reading their state: what `starter.py` does, as a library."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import TypedSearchAttributes

from brightrun.settings import Settings
from models import search_attributes
from models.enums import ErrorPolicy, JobStatus, Tier
from models.messages import NIL_UUID, BatchJobInput
from models.tables import BatchItem, BatchJob, EmotionalArc, Persona, PromptTemplate, TrainingTopic
from workflows.batch_job import BatchJobWorkflow, job_workflow_id


class BatchInputError(ValueError):
    """Bad input from a person: the message is one line that says what to fix."""


@dataclass(frozen=True)
class LaunchRequest:
    personas: list[str]
    arcs: list[str]
    topics: list[str]
    tier: Tier
    template: str | None = None
    concurrency: int = 3
    on_error: ErrorPolicy = ErrorPolicy.CONTINUE
    name: str | None = None
    user: str = "local-user"


@dataclass(frozen=True)
class LaunchedJob:
    job_id: uuid.UUID
    workflow_id: str
    total_items: int


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BatchInputError(f"{what} {value!r} is not a valid UUID") from None


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def _resolve(session: AsyncSession, table: type, kind: str, values: list[str]) -> list[Any]:
    """Each value is an id or a name; all must exist and be active."""
    if not values:
        raise BatchInputError(f"no {kind} given: pass at least one --{kind.split()[-1]}")
    rows = []
    for value in dict.fromkeys(values):
        as_id = _as_uuid(value)
        row = await session.scalar(
            select(table).where(or_(table.id == as_id, table.name == value) if as_id else table.name == value)
        )
        if row is None or not row.is_active:
            raise BatchInputError(f"unknown {kind} {value!r} (run `starter.py catalog` to list them)")
        rows.append(row)
    return rows


async def _resolve_template(session: AsyncSession, value: str | None, tier: Tier) -> uuid.UUID:
    if value is None:
        return NIL_UUID
    template_id = parse_uuid(value, "template id")
    if template_id == NIL_UUID:
        return NIL_UUID
    template = await session.get(PromptTemplate, template_id)
    if template is None or not template.is_active:
        raise BatchInputError(f"unknown or inactive prompt template {value}")
    if template.tier != tier.value:
        raise BatchInputError(f"prompt template {value} is for tier {template.tier!r}, not {tier.value!r}")
    return template_id


def _validate_user(user: str) -> str:
    # The user id becomes a storage path segment.
    if not user or not all(c.isalnum() or c in "-_." for c in user) or user.startswith("."):
        raise BatchInputError(f"user {user!r} must be letters, digits, '-', '_' or '.'")
    return user


async def create_job(sessions: async_sessionmaker, request: LaunchRequest) -> tuple[uuid.UUID, int]:
    """Validate every id and name, then create the job and all its items in one transaction."""
    if not 1 <= request.concurrency <= 100:
        raise BatchInputError(f"--concurrency must be between 1 and 100, got {request.concurrency}")
    user = _validate_user(request.user)
    async with sessions.begin() as session:
        personas = await _resolve(session, Persona, "persona", request.personas)
        arcs = await _resolve(session, EmotionalArc, "arc", request.arcs)
        topics = await _resolve(session, TrainingTopic, "topic", request.topics)
        template_id = await _resolve_template(session, request.template, request.tier)
        combinations = list(itertools.product(personas, arcs, topics))
        job_id = uuid.uuid4()
        await session.execute(
            insert(BatchJob).values(
                id=job_id,
                name=request.name or f"{request.tier.value} batch of {len(combinations)}",
                status=JobStatus.QUEUED.value,
                total_items=len(combinations),
                tier=request.tier.value,
                shared_parameters={"template_id": str(template_id)},
                concurrent_processing=request.concurrency,
                error_handling=request.on_error.value,
                created_by=user,
            )
        )
        await session.execute(
            insert(BatchItem),
            [
                {
                    "batch_job_id": job_id,
                    "position": position,
                    "topic": topic.name,
                    "tier": request.tier.value,
                    "parameters": {
                        "persona_id": str(persona.id),
                        "emotional_arc_id": str(arc.id),
                        "training_topic_id": str(topic.id),
                        "template_id": str(template_id),
                    },
                }
                for position, (persona, arc, topic) in enumerate(combinations)
            ],
        )
    return job_id, len(combinations)


async def launch(sessions: async_sessionmaker, client: Client, settings: Settings, request: LaunchRequest) -> LaunchedJob:
    job_id, total = await create_job(sessions, request)
    workflow_id = job_workflow_id(job_id)
    try:
        await client.start_workflow(
            BatchJobWorkflow.run,
            BatchJobInput(
                job_id=job_id, page_size=settings.item_page_size, history_event_limit=settings.history_event_limit
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            search_attributes=TypedSearchAttributes(
                [
                    search_attributes.BATCH_JOB_ID.value_set(str(job_id)),
                    search_attributes.BATCH_STATUS.value_set(JobStatus.QUEUED.value),
                    search_attributes.BATCH_PERCENT_DONE.value_set(0),
                ]
            ),
        )
    except Exception:
        # Nothing half-created: a job without its workflow would sit queued forever.
        async with sessions.begin() as session:
            await session.execute(delete(BatchJob).where(BatchJob.id == job_id))
        raise
    return LaunchedJob(job_id=job_id, workflow_id=workflow_id, total_items=total)


async def job_status(sessions: async_sessionmaker, job_ref: str) -> dict[str, Any]:
    job_id = parse_uuid(job_ref, "job id")
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
    if job is None:
        raise BatchInputError(f"job {job_ref} not found")
    ended = job.completed_items + job.cancelled_items
    remaining = job.total_items - ended
    return {
        "job_id": str(job.id),
        "workflow_id": job_workflow_id(job.id),
        "name": job.name,
        "status": job.status,
        "tier": job.tier,
        "total": job.total_items,
        "completed": job.completed_items,
        "successful": job.successful_items,
        "failed": job.failed_items,
        "cancelled": job.cancelled_items,
        "remaining": remaining,
        "eta_seconds": _eta_seconds(job, remaining),
        "input_tokens": job.input_tokens,
        "output_tokens": job.output_tokens,
        "cost_usd": round(job.cost_usd, 6),
        "error_message": job.error_message,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }


def _eta_seconds(job: BatchJob, remaining: int) -> float | None:
    """Remaining items at the throughput measured so far (which already reflects the concurrency)."""
    if JobStatus(job.status).is_final:
        return 0.0
    if not job.started_at or job.completed_items == 0:
        return None
    elapsed = (datetime.now(UTC) - job.started_at).total_seconds()
    return round(remaining * elapsed / job.completed_items, 1)
