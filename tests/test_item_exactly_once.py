"""Each item's outcome is produced once and counted once, on the real stack: a reset or a second
start of an item never calls Claude again, and an item workflow that is terminated is still
accounted."""

from __future__ import annotations

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
from models.tables import BatchItem, Conversation
from service import batches
from tests.helpers import launch_and_wait, reset_to_first_workflow_task
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import item_workflow_id

pytestmark = pytest.mark.usefixtures("pipeline_worker")


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
    assert (status["status"], status["completed"], status["successful"]) == (JobStatus.COMPLETED, 1, 1)


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
