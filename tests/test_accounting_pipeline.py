"""Each item's outcome is produced once and counted once, on the real stack: a reset or a second
start of an item never calls Claude again, an item workflow that is terminated is still
accounted, and a job whose workflow was terminated is taken over by `retry`."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.errors import ITEM_ALREADY_LINKED
from activities.jobs import JobActivities
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, JobStatus, Tier
from models.messages import (
    BatchItemInput,
    GeneratedRaw,
    ItemFinished,
    ItemWork,
    LinkConversationInput,
    StoredConversation,
    TokenUsage,
)
from models.tables import BatchItem, BatchJob, Conversation
from models.workflow_ids import item_workflow_id
from service import batches
from tests.helpers import eventually, launch_and_wait, reset_to_first_workflow_task
from workflows.batch_item import BatchItemWorkflow

pytestmark = pytest.mark.usefixtures("pipeline_worker")


async def launch(
    sessions: async_sessionmaker, client: Client, settings: Settings, personas: list[str], arcs: int, concurrency: int
) -> batches.LaunchedJob:
    """Start a job of the personas x the first `arcs` arcs, without waiting for it."""
    request = batches.LaunchRequest(
        personas=personas,
        arcs=["Couple Conflict -> Alignment", "Anxiety -> Confidence"][:arcs],
        topics=["Essential Estate Planning"],
        tier=Tier.TEMPLATE,
        concurrency=concurrency,
    )
    return await batches.launch(sessions, client, settings, request)


async def one_item_job(
    sessions: async_sessionmaker, client: Client, settings: Settings, persona: str, user: str
) -> tuple[batches.LaunchedJob, BatchItem]:
    """A job of one item, run to its end; returns the job and its item's row."""
    job = await launch_and_wait(
        sessions, client, settings, personas=[persona], arcs=["Couple Conflict -> Alignment"],
        topics=["Essential Estate Planning"], tier=Tier.TEMPLATE, user=user,
    )
    async with sessions() as session:
        return job, await session.scalar(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))


async def test_a_reset_or_a_second_start_of_a_completed_item_calls_claude_no_more(
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    storage: Storage,
    standin: StandinControl,
) -> None:
    user = f"once-{uuid.uuid4().hex[:8]}"
    job, item = await one_item_job(sessions, stack_client, stack_settings, "David Chen", user)
    assert item.status == ItemStatus.COMPLETED
    requests = (await standin.stats())["requests"]
    files = await storage.list_keys(storage.conversation_bucket, f"raw/{user}/")
    workflow_id = item_workflow_id(item.id)

    # The operator resets the completed item to its start, then starts it once more.
    reset_run = await reset_to_first_workflow_task(stack_client, workflow_id)
    after_reset = await stack_client.get_workflow_handle(
        workflow_id, run_id=reset_run, result_type=ItemFinished
    ).result()
    second_start = await stack_client.start_workflow(
        BatchItemWorkflow.run,
        BatchItemInput(job_id=job.job_id, item_id=item.id, user_id=user, parent_workflow_id=job.workflow_id),
        id=workflow_id,
        task_queue=stack_settings.task_queue,
    )
    after_second_start = await second_start.result()

    async with sessions() as session:
        row = await session.get(BatchItem, item.id)
        conversations = (
            await session.scalars(select(Conversation).where(Conversation.batch_job_id == job.job_id))
        ).all()
    assert (await standin.stats())["requests"] == requests, "no second Claude call"
    assert len(conversations) == 1 and row.conversation_id == item.conversation_id == conversations[0].id
    assert await storage.list_keys(storage.conversation_bucket, f"raw/{user}/") == files
    assert row.status == ItemStatus.COMPLETED
    for outcome in (after_reset, after_second_start):
        assert outcome.status == ItemStatus.COMPLETED
        assert outcome.conversation_id == conversations[0].conversation_id
    status = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (status.status, status.completed, status.successful) == (JobStatus.COMPLETED, 1, 1)


async def test_the_link_of_an_item_is_never_re_pointed(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    job, item = await one_item_job(sessions, stack_client, stack_settings, "Maria Gonzalez", "local-user")
    async with sessions() as session:
        linked = await session.get(Conversation, item.conversation_id)
    link = LinkConversationInput(
        job_id=job.job_id,
        item_id=item.id,
        conversation_id=linked.conversation_id,
        user_id=linked.created_by,
        work=ItemWork(item_id=item.id, tier=Tier.TEMPLATE, **item.parameters),
        template_id=linked.template_id,
        generations=[GeneratedRaw(raw_key=linked.raw_storage_path, model="m", stop_reason="end_turn", usage=TokenUsage(),
                                  latency_ms=1, attempt=1)],
        stored=StoredConversation(final_key=linked.final_storage_path, title="t", turn_count=8, quality_score=1.0),
    )
    jobs = JobActivities(sessions, storage)

    again = await jobs.link_conversation(link)  # a retried attempt of the step that linked it
    with pytest.raises(ApplicationError) as refused:  # another run of the item, with its own conversation
        await jobs.link_conversation(link.model_copy(update={"conversation_id": uuid.uuid4()}))

    assert again.conversation_pk == linked.id
    assert refused.value.type == ITEM_ALREADY_LINKED and refused.value.non_retryable
    assert f"already linked to conversation {linked.conversation_id}" in refused.value.message
    async with sessions() as session:
        assert (await session.get(BatchItem, item.id)).conversation_id == linked.id
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.batch_job_id == job.job_id)
        )
    assert conversations == 1


async def test_an_item_workflow_terminated_mid_call_is_accounted_and_the_job_ends(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(latency_ms=3000)
    job = await launch(sessions, stack_client, stack_settings, ["David Chen", "Maria Gonzalez", "Priya Patel"], 1, 3)
    await eventually(lambda: _requests_at_least(standin, 3), "three Claude calls are under way")
    async with sessions() as session:
        terminated = await session.scalar(
            select(BatchItem).where(BatchItem.batch_job_id == job.job_id).order_by(BatchItem.position).limit(1)
        )

    await stack_client.get_workflow_handle(item_workflow_id(terminated.id)).terminate("operator: stuck item")
    result = await asyncio.wait_for(stack_client.get_workflow_handle(job.workflow_id).result(), 120)

    async with sessions() as session:
        row = await session.get(BatchJob, job.job_id)
        items = {i.id: i for i in (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))).all()}
    statuses = [i.status for i in items.values()]
    assert items[terminated.id].status == ItemStatus.FAILED
    assert items[terminated.id].error_message == "its workflow ended (terminated) before it reported an outcome"
    assert statuses.count(ItemStatus.COMPLETED) == 2
    assert (row.status, row.completed_items, row.successful_items, row.failed_items, row.cancelled_items) == (
        JobStatus.COMPLETED, 3, 2, 1, 0,
    )
    assert (result["completed"], result["successful"], result["failed"], result["remaining"]) == (3, 2, 1, 0)


async def _requests_at_least(standin: StandinControl, count: int) -> bool:
    return (await standin.stats())["requests"] >= count


async def test_retry_takes_over_a_job_whose_workflow_was_terminated(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(latency_ms=1500)
    job = await launch(sessions, stack_client, stack_settings, ["David Chen", "Maria Gonzalez"], 2, 2)
    await eventually(lambda: _requests_at_least(standin, 2), "two Claude calls are under way")
    await stack_client.get_workflow_handle(job.workflow_id).terminate("operator: wrong button")
    stranded = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert stranded.status == JobStatus.PROCESSING

    await batches.retry_job(sessions, stack_client, stack_settings, str(job.job_id))
    await asyncio.wait_for(stack_client.get_workflow_handle(job.workflow_id).result(), 120)

    final = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (final.status, final.completed, final.successful, final.remaining) == (JobStatus.COMPLETED, 4, 4, 0)
    assert (await standin.stats())["requests"] == 4, "the items in flight during the terminate ran once"
    async with sessions() as session:
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.batch_job_id == job.job_id)
        )
    assert conversations == 4
