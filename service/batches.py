"""Creating batch jobs and reading their state: what `starter.py` does, as a library."""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer
from sqlalchemy import ColumnElement, String, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities.data_errors import classify
from activities.errors import DATABASE_UNAVAILABLE
from brightrun.claude_client import claude_call_plan, message_batch_plan
from brightrun.pricing import BATCH_PRICE_FACTOR
from brightrun.settings import Settings, get_settings
from models import search_attributes, web_ui
from models.enums import DeliveryMode, ErrorPolicy, ItemStatus, JobStatus, MessageBatchState, Tier
from models.messages import NIL_UUID, BatchJobInput, JobBudget, JobProgress, JudgePlan
from models.tables import (
    MAX_JOB_CONCURRENCY,
    BatchItem,
    BatchJob,
    BatchJobEvent,
    Conversation,
    EmotionalArc,
    MessageBatch,
    Persona,
    PromptTemplate,
    TrainingTopic,
)
from models.workflow_ids import job_workflow_id
from service.catalog_names import CatalogRow, catalog_row
from service.errors import BatchInputError
from service.ids import IdKind, resolve_id
from service.items import FailureKind, failure_kinds
from service.judge import JudgeInputError, launch_judge_plan
from service.outages import Outage, job_outages
from service.prompt_cache import TemplateTooShortToCache, templates_too_short_to_cache
from workflows.budget import items_within_budget, projected_item_cost
from workflows.config import ITEM_CANCEL_GRACE


def _max_length(column: ColumnElement[Any]) -> int:
    """A VARCHAR column's length: the schema is the one place it is stated."""
    if not isinstance(column.type, String) or column.type.length is None:
        raise TypeError(f"{column} has no maximum length")
    return column.type.length


JOB_NAME_MAX_LENGTH = _max_length(BatchJob.__table__.c.name)
USER_ID_MAX_LENGTH = _max_length(BatchJob.__table__.c.created_by)
# Samples per combination, and items per job: twice the largest job ever run (10,000 items);
# more is likelier a typo in --samples than a plan, and can be split into several jobs.
MAX_SAMPLES = 1_000
MAX_JOB_ITEMS = 20_000
# Jobs one `starter.py jobs` lists at most (as `review list`): a larger --limit is a typo.
LIST_LIMIT_MAX = 10_000
# The largest budget a launch takes: more is likelier a typo than a plan.
MAX_COST_USD = 1_000_000.0


# `status --json` has printed datetime.isoformat() since its first version; scripts parse it.
IsoDatetime = Annotated[datetime | None, PlainSerializer(lambda value: value and value.isoformat(), when_used="json")]


class JobStatusView(BaseModel):
    """A job's state as `starter.py status` shows it: its row with the live numbers of its
    workflow. While PostgreSQL is down only the workflow's fields are set (and
    `database_unavailable`); `as_json` prints the fields that were set."""

    job_id: uuid.UUID
    workflow_id: str
    name: str | None = None
    status: JobStatus
    tier: Tier | None = None
    on_error: ErrorPolicy | None = None
    concurrency: int | None = None
    mode: DeliveryMode | None = None
    open_batches: int | None = None
    open_batch_requests: int | None = None
    total: int
    completed: int
    successful: int
    failed: int
    cancelled: int
    in_flight: int
    remaining: int
    enriched: int | None
    elapsed_s: float | None
    eta_seconds: float | None
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_hit_rate: float | None = None
    # The job's templates whose instructions are too short for the model to cache (none: unset).
    templates_too_short_to_cache: list[TemplateTooShortToCache] | None = None
    cost_usd: float
    # Judging (a job launched with it): conversations judged, and what judging cost (in cost_usd too).
    judged: int | None = None
    judge_cost_usd: float | None = None
    projected_cost_usd: float | None = None
    saving_usd: float | None = None
    # The launch's estimate (service/estimate.py) in the job's mode, beside the actual above; the
    # budget, and why the job paused itself ("budget reached: $X of $Y").
    estimated_cost_usd: float | None = None
    estimated_input_tokens: int | None = None
    estimated_output_tokens: int | None = None
    max_cost_usd: float | None = None
    pause_reason: str | None = None
    error_message: str | None = None
    # The failed items by error type, most frequent first (none failed: unset).
    failures: list[FailureKind] | None = None
    started_at: IsoDatetime
    completed_at: IsoDatetime
    waiting_on: list[Outage] | None
    database_unavailable: str | None = None  # the row could not be read: the numbers are the workflow's

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


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
    mode: DeliveryMode = DeliveryMode.ONLINE
    samples: int = 1
    # 1 (first) to 5 (last) among backlogged jobs; None = the middle (Temporal's default, 3).
    priority: int | None = None
    # The budget (--max-cost): the job pauses itself before a call could take its spending past it.
    max_cost_usd: float | None = None
    # Claude as judge (service/judge.py): True, False, or None for on when the catalog has a
    # rubric (what `launch` passes without --judge/--no-judge; callers of this module say); the
    # rubric's name (its latest version), None for the catalog's newest.
    judge: bool | None = False
    rubric: str | None = None


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


async def _resolve(session: AsyncSession, table: type[CatalogRow], kind: str, values: list[str]) -> list[CatalogRow]:
    """Each value is an id or a name; all must exist and be active."""
    if not values:
        raise BatchInputError(f"no {kind} given: pass at least one --{kind.split()[-1]}")
    rows: dict[uuid.UUID, CatalogRow] = {}
    for value in values:
        row = await catalog_row(session, table, kind, value)
        if row.id in rows:
            # Twice the same row would make every combination with it twice.
            raise BatchInputError(f"{kind} {row.name!r} is given twice")
        rows[row.id] = row
    return list(rows.values())


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


def validate_user(user: str) -> str:
    """Checked once wherever a user id comes in: it becomes a storage path segment and an owner."""
    if not user or not all(c.isalnum() or c in "-_." for c in user) or user.startswith("."):
        raise BatchInputError(f"user {user!r} must be letters, digits, '-', '_' or '.'")
    if len(user) > USER_ID_MAX_LENGTH:
        raise BatchInputError(f"user id must be at most {USER_ID_MAX_LENGTH} characters, got {len(user)}")
    return user


@dataclass(frozen=True)
class ResolvedLaunch:
    """A launch request checked against the catalog: what its job would be, before anything is created."""

    name: str | None
    user: str
    combinations: list[tuple[Persona, EmotionalArc, TrainingTopic]]
    template_id: uuid.UUID  # the nil UUID: each item's template is auto-selected by its arc
    total: int
    judge: JudgePlan | None  # the rubric version its conversations are judged with; None: not judged


def _check_options(request: LaunchRequest) -> tuple[str | None, str]:
    """The options checked without the catalog; returns the job's name and user."""
    if not 1 <= request.concurrency <= MAX_JOB_CONCURRENCY:
        raise BatchInputError(f"--concurrency must be between 1 and {MAX_JOB_CONCURRENCY}, got {request.concurrency}")
    if not 1 <= request.samples <= MAX_SAMPLES:
        raise BatchInputError(f"--samples must be between 1 and {MAX_SAMPLES}, got {request.samples}")
    if request.priority is not None and not 1 <= request.priority <= 5:
        raise BatchInputError(f"--priority must be between 1 (first) and 5 (last), got {request.priority}")
    # Spaces around a name are a slip of the shell, not part of it.
    name = request.name.strip() if request.name is not None else None
    if name is not None and not 1 <= len(name) <= JOB_NAME_MAX_LENGTH:
        raise BatchInputError(f"--name must be 1 to {JOB_NAME_MAX_LENGTH} characters, got {len(name)}")
    if request.max_cost_usd is not None and not 0 < request.max_cost_usd <= MAX_COST_USD:  # also refuses nan
        raise BatchInputError(f"--max-cost must be more than 0 and at most {MAX_COST_USD:.0f} USD, got {request.max_cost_usd}")
    return name, validate_user(request.user)


async def resolve_launch(session: AsyncSession, request: LaunchRequest) -> ResolvedLaunch:
    """Validate every option, id and name of a launch; BatchInputError names what to fix."""
    name, user = _check_options(request)
    personas = await _resolve(session, Persona, "persona", request.personas)
    arcs = await _resolve(session, EmotionalArc, "arc", request.arcs)
    topics = await _resolve(session, TrainingTopic, "topic", request.topics)
    template_id = await _resolve_template(session, request.template, request.tier)
    try:
        judge = await launch_judge_plan(session, request.judge, request.rubric)
    except JudgeInputError as error:
        raise BatchInputError(str(error)) from None
    combinations = list(itertools.product(personas, arcs, topics))
    total = len(combinations) * request.samples
    if total > MAX_JOB_ITEMS:
        raise BatchInputError(
            f"{len(combinations)} combinations x {request.samples} samples = {total} items, "
            f"more than the {MAX_JOB_ITEMS} a job may have: launch fewer samples or split the job"
        )
    return ResolvedLaunch(
        name=name, user=user, combinations=combinations, template_id=template_id, total=total, judge=judge
    )


async def create_job(
    sessions: async_sessionmaker, request: LaunchRequest, estimate: dict[str, Any] | None = None
) -> tuple[uuid.UUID, int]:
    """Validate every id and name, then create the job and all its items in one transaction;
    `estimate` is what `launch --dry-run` would print for it, kept beside the actual."""
    async with sessions.begin() as session:
        launch = await resolve_launch(session, request)
        name, user, template_id, total = launch.name, launch.user, launch.template_id, launch.total
        judge_plan = launch.judge
        job_id = uuid.uuid4()
        await session.execute(
            insert(BatchJob).values(
                id=job_id,
                name=name or f"{request.tier.value} batch of {total}",
                status=JobStatus.QUEUED.value,
                total_items=total,
                tier=request.tier.value,
                shared_parameters={
                    "template_id": str(template_id),
                    **({"judge": judge_plan.model_dump()} if judge_plan else {}),
                },
                concurrent_processing=request.concurrency,
                error_handling=request.on_error.value,
                mode=request.mode.value,
                priority=request.priority or 0,
                created_by=user,
                estimate=estimate,
                max_cost_usd=request.max_cost_usd,
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
                        "sample": sample,
                    },
                }
                for position, ((persona, arc, topic), sample) in enumerate(
                    itertools.product(launch.combinations, range(1, request.samples + 1))
                )
            ],
        )
    return job_id, total


def job_summary(job: BatchJob) -> str:
    """The job's line in the web UI's workflow list (its static summary)."""
    return f"{job.name} · {job.total_items} items · {job.tier} · {job.mode}"


async def start_job_workflow(client: Client, settings: Settings, job: BatchJob) -> str:
    """Start a run of the job's workflow: for a new job, or to retry one (the default id reuse
    policy lets a new run take the id of an ended one)."""
    # The workflow module loads the activities it names: imported by the commands that start a
    # run, not by every command (status, pause...), which send its queries and signals by name.
    from workflows.batch_job import BatchJobWorkflow

    job_id = job.id
    workflow_id = job_workflow_id(job_id)
    summary = job_summary(job)
    await client.start_workflow(
        BatchJobWorkflow.run,
        BatchJobInput(
            job_id=job_id,
            claude=claude_call_plan(settings),
            message_batches=message_batch_plan(settings),
            page_size=settings.item_page_size,
            history_event_limit=settings.history_event_limit,
            unreported_check_s=settings.unreported_check_s,
            summary=summary,
        ),
        id=workflow_id,
        task_queue=settings.task_queue,
        static_summary=summary,
        static_details=web_ui.job_details(client.namespace, job_id),  # links to its items
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.BATCH_JOB_ID, str(job_id)),
                SearchAttributePair(search_attributes.BATCH_JOB_NAME, job.name),
                SearchAttributePair(search_attributes.BATCH_STATUS, JobStatus.QUEUED.value),
                SearchAttributePair(search_attributes.BATCH_PERCENT_DONE, 0),
                SearchAttributePair(search_attributes.BATCH_PROGRESS, f"0/{job.total_items}"),
            ]
        ),
    )
    return workflow_id


async def launch(
    sessions: async_sessionmaker,
    client: Client,
    settings: Settings,
    request: LaunchRequest,
    estimate: dict[str, Any] | None = None,
) -> LaunchedJob:
    """Create the job and start its workflow; `estimate` (service/estimate.py) is kept on the job,
    and a budget needs it: it projects an item's cost before any has run."""
    if request.max_cost_usd is not None and estimate is None:
        raise BatchInputError("--max-cost needs the job's estimate: launch it with service.estimate.launch_estimated")
    job_id, total = await create_job(sessions, request, estimate)
    try:
        workflow_id = await start_job_workflow(client, settings, await _load_job(sessions, str(job_id)))
    except Exception:
        # Nothing half-created: a job without its workflow would sit queued forever.
        async with sessions.begin() as session:
            await session.execute(delete(BatchJob).where(BatchJob.id == job_id))
        raise
    return LaunchedJob(job_id=job_id, workflow_id=workflow_id, total_items=total)


async def _load_job(sessions: async_sessionmaker, job_ref: str) -> BatchJob:
    async with sessions() as session:
        job = await session.get(BatchJob, await resolve_id(session, IdKind.JOB, job_ref))
    if job is None:
        raise BatchInputError(f"job {job_ref} not found")
    return job


async def _workflow_running(client: Client, job_id: uuid.UUID) -> bool:
    """Whether the job's workflow runs, from its description: a query fails also while the
    workflow runs (no worker, or a busy one), so a failed query never means "ended"."""
    try:
        description = await client.get_workflow_handle(job_workflow_id(job_id)).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


async def _query_progress(client: Client, job_id: uuid.UUID) -> JobProgress | None:
    """The running workflow's own answer; None when it cannot answer (no worker, or a busy one)."""
    handle = client.get_workflow_handle(job_workflow_id(job_id))
    try:
        return await handle.query("progress", result_type=JobProgress, rpc_timeout=timedelta(seconds=5))
    except (RPCError, WorkflowQueryFailedError):
        return None


async def _live_progress(client: Client | None, job_id: uuid.UUID) -> JobProgress | None:
    """The workflow's own answer while it runs; None when it does not run (or cannot answer)."""
    if client is None:
        return None
    try:
        running = await _workflow_running(client, job_id)
    except RPCError:
        return None
    return await _query_progress(client, job_id) if running else None


async def job_status(
    sessions: async_sessionmaker, job_ref: str, client: Client | None = None, claude_model: str | None = None
) -> JobStatusView:
    """The job's row, with the live numbers of its workflow (status, in flight, ETA, the parts
    its items wait for) when it runs. While PostgreSQL is down, the workflow's view alone.
    `claude_model` (default: the settings') decides which templates are too short to cache."""
    try:
        job = await _load_job(sessions, job_ref)
    except Exception as exc:
        failure = classify(exc)
        # Without the database only a whole id names a job (a prefix is looked up there).
        job_id = _as_uuid(job_ref)
        if client is None or failure is None or failure.type != DATABASE_UNAVAILABLE or job_id is None:
            raise
        return await _status_without_database(client, job_id, failure.message, exc)
    live = await _live_progress(client, job.id)
    waiting_on = await job_outages(client, job.id) if live and client else []
    remaining = job.total_items - job.completed_items - job.cancelled_items
    open_batches = await _open_message_batches(sessions, job) if job.mode == DeliveryMode.BATCH else []
    async with sessions() as session:
        enriched = await session.scalar(
            select(func.count()).where(Conversation.batch_job_id == job.id, Conversation.enriched_at.is_not(None))
        )
        too_short = await templates_too_short_to_cache(session, job, claude_model or get_settings().claude_model)
        failures = await failure_kinds(session, job.id) if job.failed_items else []
    return JobStatusView(
        job_id=job.id,
        workflow_id=job_workflow_id(job.id),
        name=job.name,
        status=live.status if live else JobStatus(job.status),
        tier=job.tier,
        on_error=job.error_handling,
        concurrency=job.concurrent_processing,
        mode=job.mode,
        open_batches=len(open_batches) if job.mode == DeliveryMode.BATCH else None,
        open_batch_requests=sum(open_batches) if job.mode == DeliveryMode.BATCH else None,
        total=job.total_items,
        completed=job.completed_items,
        successful=job.successful_items,
        failed=job.failed_items,
        cancelled=job.cancelled_items,
        in_flight=live.in_flight if live else 0,
        remaining=remaining,
        enriched=enriched,
        elapsed_s=_elapsed_s(job),
        eta_seconds=_eta_seconds(job, remaining, live),
        input_tokens=job.input_tokens,
        output_tokens=job.output_tokens,
        cache_write_tokens=job.cache_write_tokens,
        cache_read_tokens=job.cache_read_tokens,
        cache_hit_rate=_cache_hit_rate(job),
        **({"templates_too_short_to_cache": too_short} if too_short else {}),
        cost_usd=round(job.cost_usd, 8),
        **_judging(job),
        projected_cost_usd=_projected_cost(job),
        saving_usd=_batch_saving(job),
        **_estimate_fields(job),
        max_cost_usd=job.max_cost_usd,
        pause_reason=job.pause_reason,
        error_message=job.error_message,
        **({"failures": failures} if failures else {}),
        started_at=job.started_at,
        completed_at=job.completed_at,
        waiting_on=waiting_on or None,
    )


async def _status_without_database(
    client: Client, job_id: uuid.UUID, database_error: str, exc: Exception
) -> JobStatusView:
    """The running workflow's own numbers; without a running workflow there is nothing to show."""
    live = await _live_progress(client, job_id)
    if live is None:
        raise exc
    return JobStatusView(
        job_id=job_id,
        workflow_id=job_workflow_id(job_id),
        status=live.status,
        total=live.total,
        completed=live.completed,
        successful=live.successful,
        failed=live.failed,
        cancelled=live.cancelled,
        in_flight=live.in_flight,
        remaining=live.remaining,
        enriched=None,
        elapsed_s=live.elapsed_s,
        eta_seconds=live.eta_seconds,
        input_tokens=live.usage.input_tokens,
        output_tokens=live.usage.output_tokens,
        cost_usd=round(live.usage.cost_usd, 8),
        started_at=live.started_at,
        completed_at=None,
        waiting_on=await job_outages(client, job_id) or None,
        # Says the row could not be read: the numbers above are the workflow's.
        database_unavailable=database_error,
    )


async def _open_message_batches(sessions: async_sessionmaker, job: BatchJob) -> list[int]:
    """The request counts of the job's Message Batches that have not ended."""
    async with sessions() as session:
        counts = await session.scalars(
            select(MessageBatch.request_count).where(
                MessageBatch.batch_job_id == job.id, MessageBatch.status != MessageBatchState.ENDED.value
            )
        )
        return list(counts)


def _estimate_fields(job: BatchJob) -> dict[str, Any]:
    """The estimate kept at launch, in the job's mode; None for a job launched without one."""
    estimate = job.estimate or {}
    cost_key = "estimated_cost_usd_batch" if job.mode == DeliveryMode.BATCH else "estimated_cost_usd"
    return {
        "estimated_cost_usd": estimate.get(cost_key),
        "estimated_input_tokens": estimate.get("input_tokens"),
        "estimated_output_tokens": estimate.get("output_tokens"),
    }


def _judging(job: BatchJob) -> dict[str, Any]:
    """A judged job's judging numbers; nothing for a job launched without judging."""
    if not job.shared_parameters.get("judge"):
        return {}
    return {"judged": job.judged_items, "judge_cost_usd": round(job.judge_cost_usd, 8)}


def _batch_saving(job: BatchJob) -> float | None:
    """What the same tokens would have cost more online (batch tokens cost half)."""
    if job.mode != DeliveryMode.BATCH:
        return None
    return round(job.cost_usd / BATCH_PRICE_FACTOR - job.cost_usd, 8)


def _cache_hit_rate(job: BatchJob) -> float | None:
    """Share of all prompt tokens that were read from the prompt cache."""
    prompt_tokens = job.input_tokens + job.cache_write_tokens + job.cache_read_tokens
    return round(job.cache_read_tokens / prompt_tokens, 3) if prompt_tokens else None


def _projected_cost(job: BatchJob) -> float | None:
    """The cost so far per item that ran, times every item that will run."""
    if job.completed_items == 0:
        return None
    will_run = job.total_items - job.cancelled_items
    return round(job.cost_usd / job.completed_items * will_run, 6)


def _elapsed_s(job: BatchJob) -> float | None:
    if not job.started_at:
        return None
    end = job.completed_at or datetime.now(UTC)
    return round((end - job.started_at).total_seconds(), 1)


def _eta_seconds(job: BatchJob, remaining: int, live: JobProgress | None) -> float | None:
    """From the workflow's measured item times and concurrency; else from the row's throughput."""
    if JobStatus(job.status).is_final:
        return 0.0
    if live is not None:
        return live.eta_seconds
    elapsed = _elapsed_s(job)
    if elapsed is None or job.completed_items == 0 or job.status == JobStatus.PAUSED:
        return None
    return round(remaining * elapsed / job.completed_items, 1)


class JobListing(BaseModel):
    """One line of `starter.py jobs`."""

    job_id: uuid.UUID
    name: str
    status: JobStatus
    user: str
    tier: Tier
    mode: DeliveryMode
    total: int
    completed: int
    successful: int
    failed: int
    cancelled: int
    cost_usd: float
    eta_seconds: float | None
    created_at: datetime


async def list_jobs(
    sessions: async_sessionmaker,
    status: JobStatus | None = None,
    user: str | None = None,
    limit: int = 50,
    visible: ColumnElement[bool] | None = None,
) -> list[JobListing]:
    """Jobs newest first, from their rows (the workflows mirror every transition there); only
    the `visible` ones when given (service/access.py: a user's own and shared jobs)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise BatchInputError(f"--limit must be between 1 and {LIST_LIMIT_MAX}, got {limit}")
    query = select(BatchJob).order_by(BatchJob.created_at.desc(), BatchJob.id).limit(limit)
    if visible is not None:
        query = query.where(visible)
    if status is not None:
        query = query.where(BatchJob.status == status.value)
    if user is not None:
        query = query.where(BatchJob.created_by == validate_user(user))
    async with sessions() as session:
        jobs = (await session.scalars(query)).all()
    return [
        JobListing(
            job_id=job.id,
            name=job.name,
            status=JobStatus(job.status),
            user=job.created_by,
            tier=Tier(job.tier),
            mode=DeliveryMode(job.mode),
            total=job.total_items,
            completed=job.completed_items,
            successful=job.successful_items,
            failed=job.failed_items,
            cancelled=job.cancelled_items,
            cost_usd=round(job.cost_usd, 6),
            eta_seconds=_eta_seconds(job, job.total_items - job.completed_items - job.cancelled_items, None),
            created_at=job.created_at,
        )
        for job in jobs
    ]


# What each control command needs the job to be in, and the state that shows it took effect.
# action -> (its signal's name, the states it may be sent in, the states that show it took effect)
_CONTROL = {
    "pause": ("pause", {JobStatus.QUEUED, JobStatus.PROCESSING}, {JobStatus.PAUSED}),
    "resume": ("resume", {JobStatus.PAUSED}, {JobStatus.PROCESSING}),
    "cancel": ("cancel", {JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.PAUSED}, {JobStatus.CANCELLED}),
}


# How long a control command waits for the job to show it: `cancel` as long as a halting job
# waits for its cancelled items to report, and a margin.
CONTROL_WAIT_S = {"pause": 60.0, "resume": 60.0, "cancel": (ITEM_CANCEL_GRACE + timedelta(seconds=30)).total_seconds()}
# The longest wait a person may ask for: a day, far past any halt.
CONTROL_WAIT_MAX_S = 86_400.0
# `watch` refreshes at most this often: each refresh reads the row and queries the workflow.
WATCH_INTERVAL_MIN_S = 0.2
WATCH_INTERVAL_MAX_S = 3_600.0


def check_control_wait(wait_s: float) -> None:
    if not 0 <= wait_s <= CONTROL_WAIT_MAX_S:  # also refuses nan, which no deadline ever passes
        raise BatchInputError(f"--wait must be between 0 and {CONTROL_WAIT_MAX_S:.0f} seconds, got {wait_s}")


def check_watch_interval(interval_s: float) -> None:
    if not WATCH_INTERVAL_MIN_S <= interval_s <= WATCH_INTERVAL_MAX_S:  # also refuses nan
        raise BatchInputError(
            f"--interval must be between {WATCH_INTERVAL_MIN_S} and {WATCH_INTERVAL_MAX_S:.0f} seconds, got {interval_s}"
        )


class ControlNotConfirmed(Exception):
    """A control command was sent, but the job did not show its effect in time; the message says
    what the job still waits for."""


async def control_job(
    sessions: async_sessionmaker,
    client: Client,
    job_ref: str,
    action: str,
    wait_s: float | None = None,
    max_cost_usd: float | None = None,
) -> JobStatusView:
    """Send pause, resume or cancel, then wait (bounded) until the job shows the new state;
    ControlNotConfirmed when it does not within `wait_s` (default CONTROL_WAIT_S). A resume
    sets the new budget `max_cost_usd` first, and is refused if the job would pause again at once."""
    wait_s = CONTROL_WAIT_S[action] if wait_s is None else wait_s
    check_control_wait(wait_s)
    signal, allowed, expected = _CONTROL[action]
    job = await _load_job(sessions, job_ref)
    running = await _workflow_running(client, job.id)
    live = await _query_progress(client, job.id) if running else None
    # A running workflow that does not answer (no worker, or a busy one) still takes the signal
    # when a worker picks it up; its row says the state meanwhile.
    current = live.status if live else JobStatus(job.status)
    if not running and not current.is_final:
        raise BatchInputError(f"job {job.id} is {current.value} but its workflow is not running; try `retry`")
    if current not in allowed:
        raise BatchInputError(f"cannot {action} job {job.id}: it is {current.value}")
    if max_cost_usd is not None and action != "resume":
        raise BatchInputError(f"--max-cost is for launch and resume, not {action}")
    if action == "resume":
        await _resume_budget(sessions, client, job, max_cost_usd)
    await client.get_workflow_handle(job_workflow_id(job.id)).signal(signal)
    deadline = asyncio.get_running_loop().time() + wait_s
    while not await _shows(sessions, client, job.id, expected):
        if asyncio.get_running_loop().time() > deadline:
            raise ControlNotConfirmed(await _still_waiting(sessions, client, job.id, action, wait_s))
        await asyncio.sleep(0.25)
    return await job_status(sessions, job_ref, client)


async def _resume_budget(sessions: async_sessionmaker, client: Client, job: BatchJob, max_cost_usd: float | None) -> None:
    """The budget a resumed job runs with: refused if not even its next item fits (the job would
    pause again at once), else a new one is set on the row and sent to the workflow."""
    if max_cost_usd is not None and not 0 < max_cost_usd <= MAX_COST_USD:  # also refuses nan
        raise BatchInputError(f"--max-cost must be more than 0 and at most {MAX_COST_USD:.0f} USD, got {max_cost_usd}")
    budget = job.max_cost_usd if max_cost_usd is None else max_cost_usd
    remaining = job.total_items - job.completed_items - job.cancelled_items
    if budget is not None and remaining:
        estimated = (job.estimate or {}).get("max_item_cost_usd", 0.0)
        item_cost = projected_item_cost(estimated, job.cost_usd, job.completed_items)
        if items_within_budget(budget, job.cost_usd, 0, item_cost) == 0:
            raise BatchInputError(
                f"job {job.id} would pause again at once: it spent ${job.cost_usd:.4f} of its ${budget:.4f} budget "
                f"and its next item is projected at ${item_cost:.4f}; resume with --max-cost "
                f"{math.ceil((job.cost_usd + item_cost) * 10_000) / 10_000:.4f} or more"
            )
    if max_cost_usd is None:
        return
    async with sessions.begin() as session:
        await session.execute(update(BatchJob).where(BatchJob.id == job.id).values(max_cost_usd=max_cost_usd))
        session.add(BatchJobEvent(batch_job_id=job.id, line=f"job budget set to ${max_cost_usd:.4f}"))
    await client.get_workflow_handle(job_workflow_id(job.id)).signal("set_budget", JobBudget(max_cost_usd=max_cost_usd))


async def _still_waiting(
    sessions: async_sessionmaker, client: Client, job_id: uuid.UUID, action: str, wait_s: float
) -> str:
    """One line: the state the job is still in, and which items have not reported yet."""
    job = await _load_job(sessions, str(job_id))
    live = await _live_progress(client, job_id)
    said = f"{action} sent, but after {wait_s:.0f} s job {job_id} is still {live.status.value if live else job.status}"
    if live is None:
        return f"{said}; its workflow does not answer (is a worker running? `make status`)"
    if not live.in_flight_items:
        return f"{said}; no item is in flight (its last steps are still running)"
    async with sessions() as session:
        rows = (
            await session.execute(
                select(BatchItem.id, BatchItem.position, BatchItem.status)
                .where(BatchItem.id.in_(live.in_flight_items))
                .order_by(BatchItem.position)
            )
        ).all()
    shown = ", ".join(f"item {position} ({item_id}, {status})" for item_id, position, status in rows[:10])
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return f"{said}; {len(rows)} item(s) have not reported yet: {shown}{more}"


async def _shows(sessions: async_sessionmaker, client: Client, job_id: uuid.UUID, expected: set[JobStatus]) -> bool:
    """Both the workflow (while it runs) and the row show one of the expected states."""
    job = await _load_job(sessions, str(job_id))
    live = await _live_progress(client, job_id)
    return JobStatus(job.status) in expected and (live is None or live.status in expected)


async def retry_job(sessions: async_sessionmaker, client: Client, settings: Settings, job_ref: str) -> JobStatusView:
    """Queue exactly the failed items of an ended job again, with their original parameters, and
    start a new run of the job's workflow. Items that succeeded are never regenerated. A job
    whose workflow ended without ending it (terminated from the web UI, say) is retried too."""
    job = await _load_job(sessions, job_ref)
    if await _workflow_running(client, job.id):
        raise BatchInputError(f"job {job.id} is still running; retry it once it has ended")
    if JobStatus(job.status).is_final:
        if job.failed_items == 0:
            raise BatchInputError(f"job {job.id} has no failed items to retry")
        await _requeue_failed_items(sessions, job.id)
    elif job.status != JobStatus.QUEUED:
        # Its workflow ended without ending the job (terminated, or failed): the new run takes
        # over, with the items still processing, and re-runs the failed ones.
        await _requeue_failed_items(sessions, job.id)
    # (a queued job whose workflow is gone only needs its workflow)
    await start_job_workflow(client, settings, job)
    return await job_status(sessions, job_ref, client)


async def _requeue_failed_items(sessions: async_sessionmaker, job_id: uuid.UUID) -> None:
    async with sessions.begin() as session:
        requeued = (
            await session.scalars(
                update(BatchItem)
                .where(BatchItem.batch_job_id == job_id, BatchItem.status == ItemStatus.FAILED.value)
                .values(status=ItemStatus.QUEUED.value, error_message=None, error_type=None, conversation_id=None, processed_at=None,
                        progress=0, usage={})
                .returning(BatchItem.id)
            )
        ).all()
        await session.execute(
            update(BatchJob)
            .where(BatchJob.id == job_id)
            .values(
                status=JobStatus.QUEUED.value,
                failed_items=BatchJob.failed_items - len(requeued),
                completed_items=BatchJob.completed_items - len(requeued),
                completed_at=None,
                error_message=None,
            )
        )
        session.add(BatchJobEvent(batch_job_id=job_id, line=f"job retry: {len(requeued)} failed items queued again"))
