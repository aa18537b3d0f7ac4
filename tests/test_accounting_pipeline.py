"""Each item's outcome is produced once and counted once, on the real stack: a reset or a second
start of an item never calls Claude again, an item workflow that is terminated is still
accounted, and a job whose workflow was terminated is taken over by `retry`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.conversations import ConversationActivities
from activities.errors import ITEM_ALREADY_LINKED, ITEM_UNREPORTED
from activities.items import ItemActivities
from activities.jobs import JobActivities
from activities.templates import TemplateActivities
from brightrun.settings import Settings
from brightrun.storage import (
    Storage,
    batch_request_key,
    enriched_conversation_key,
    final_conversation_key,
    raw_response_key,
)
from devtools.load_catalog import catalog_id
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, JobStatus, Tier
from models.messages import (
    BatchItemInput,
    CompleteItemInput,
    GeneratedRaw,
    ItemFinished,
    ItemWork,
    LinkConversationInput,
    PrepareItemInput,
    ResolvedPrompt,
    StoredConversation,
    TokenUsage,
    UnreportedItems,
)
from models.tables import BatchItem, BatchJob, Conversation
from models.workflow_ids import item_conversation_id, item_workflow_id
from service import batches
from service.job_outcome import job_outcome
from tests.helpers import eventually, launch_and_wait, reset_to_first_workflow_task
from workflows.batch_item import BatchItemWorkflow

pytestmark = pytest.mark.usefixtures("pipeline_worker")


def job_request(personas: list[str], arcs: int, concurrency: int, user: str = "local-user") -> batches.LaunchRequest:
    """A job of the personas x the first `arcs` arcs."""
    return batches.LaunchRequest(
        personas=personas,
        arcs=["Couple Conflict -> Alignment", "Anxiety -> Confidence"][:arcs],
        topics=["Essential Estate Planning"],
        tier=Tier.TEMPLATE,
        concurrency=concurrency,
        user=user,
    )


async def launch(
    sessions: async_sessionmaker,
    client: Client,
    settings: Settings,
    personas: list[str],
    arcs: int,
    concurrency: int,
    user: str = "local-user",
) -> batches.LaunchedJob:
    """Start a job of the personas x the first `arcs` arcs, without waiting for it."""
    return await batches.launch(sessions, client, settings, job_request(personas, arcs, concurrency, user))


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


async def test_the_merged_item_steps_run_again_whole_write_nothing_twice(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    """A retried prepare_item or complete_item repeats its steps from the first: each step's
    write must find its own earlier write and change nothing."""
    user = f"twice-{uuid.uuid4().hex[:8]}"
    job, item = await one_item_job(sessions, stack_client, stack_settings, "Maria Gonzalez", user)
    async with sessions() as session:
        linked = await session.get(Conversation, item.conversation_id)
        counted_before = (await session.get(BatchJob, job.job_id)).completed_items
    items = ItemActivities(
        JobActivities(sessions, storage),
        TemplateActivities(sessions, storage),
        ConversationActivities(storage, stack_settings.quality_min_score),
        stack_client,
    )
    work = ItemWork(item_id=item.id, tier=Tier.TEMPLATE, **item.parameters)
    outcome = ItemFinished(item_id=item.id, status=ItemStatus.COMPLETED, conversation_id=linked.conversation_id)
    again = CompleteItemInput(
        job_id=job.job_id,
        user_id=user,
        conversation_id=linked.conversation_id,
        work=work,
        prompt=ResolvedPrompt(template_id=linked.template_id, template_version=1, persona_name="Maria Gonzalez",
                              topic_name="Essential Estate Planning"),
        generations=[GeneratedRaw(raw_key=linked.raw_storage_path, model="m", stop_reason="end_turn", usage=TokenUsage(),
                                  latency_ms=1, attempt=1)],
        finished_at=datetime.now(UTC),
        outcome=outcome,
        report_to=job.workflow_id,  # ended: the report finds no workflow to tell
    )

    status = await items.complete_item(again)
    prepared = await items.prepare_item(
        PrepareItemInput(item_id=item.id, user_id=user, conversation_id=linked.conversation_id)
    )

    assert status == ItemStatus.COMPLETED
    # The ended item is reported as its row holds it: no template chosen, no prompt written.
    assert prepared.prompt is None and prepared.work.recorded is not None
    assert prepared.work.recorded.conversation_id == linked.conversation_id
    async with sessions() as session:
        row = await session.get(BatchItem, item.id)
        job_row = await session.get(BatchJob, job.job_id)
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.batch_job_id == job.job_id)
        )
    assert (row.status, row.conversation_id) == (ItemStatus.COMPLETED, linked.id)
    assert job_row.completed_items == counted_before == 1 and conversations == 1
    assert await storage.get_bytes_or_none(storage.conversation_bucket, linked.final_storage_path) is not None


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


async def test_a_link_after_the_item_was_recorded_unreported_leaves_the_row_as_recorded(
    sessions: async_sessionmaker, stack_settings: Settings, storage: Storage
) -> None:
    user = f"late-link-{uuid.uuid4().hex[:8]}"
    job_id, _ = await batches.create_job(sessions, job_request(["Priya Patel"], 1, 1, user))
    async with sessions() as session:
        item_id = await session.scalar(select(BatchItem.id).where(BatchItem.batch_job_id == job_id))
    jobs = JobActivities(sessions, storage)
    work = await jobs.begin_item(item_id)
    # The job takes the item's workflow as ended unreported while its last step still runs.
    await jobs.record_unreported_items(UnreportedItems(
        job_id=job_id, finished_at=datetime.now(UTC), status=ItemStatus.FAILED,
        reasons={item_id: "its workflow ended without reporting"},
    ))
    conversation_id = item_conversation_id(item_id)

    linked = await jobs.link_conversation(LinkConversationInput(
        job_id=job_id, item_id=item_id, conversation_id=conversation_id, user_id=user, work=work,
        template_id=catalog_id("template", "template - general"),
        generations=[GeneratedRaw(raw_key=raw_response_key(user, conversation_id), model="m", stop_reason="end_turn",
                                  usage=TokenUsage(), latency_ms=1, attempt=1)],
        stored=StoredConversation(final_key=final_conversation_key(user, conversation_id), title="t", turn_count=8,
                                  quality_score=1.0),
    ))

    assert linked.conversation_pk is None and linked.recorded is not None
    assert (linked.recorded.status, linked.recorded.error_message, linked.recorded.error_type) == (
        ItemStatus.FAILED, "its workflow ended without reporting", ITEM_UNREPORTED
    )
    async with sessions() as session:
        row = await session.get(BatchItem, item_id)
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.batch_job_id == job_id)
        )
    assert (row.status, row.conversation_id, conversations) == (ItemStatus.FAILED, None, 0)
    assert (row.attempts, row.error_type) == (1, ITEM_UNREPORTED), "one run, counted by begin_item"


async def test_an_item_workflow_terminated_mid_call_is_accounted_and_the_job_ends(
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    storage: Storage,
    standin: StandinControl,
) -> None:
    await standin.configure(latency_ms=3000)
    user = f"terminated-{uuid.uuid4().hex[:8]}"
    personas = ["David Chen", "Maria Gonzalez", "Priya Patel"]
    job = await launch(sessions, stack_client, stack_settings, personas, 1, 3, user)
    await eventually(lambda: _requests_at_least(standin, 3), "three Claude calls are under way")
    async with sessions() as session:
        terminated = await session.scalar(
            select(BatchItem).where(BatchItem.batch_job_id == job.job_id).order_by(BatchItem.position).limit(1)
        )

    await stack_client.get_workflow_handle(item_workflow_id(terminated.id)).terminate("operator: stuck item")
    result = await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), 120)

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
    assert (result.completed, result.successful, result.failed, result.remaining) == (3, 2, 1, 0)

    # The operator retries it: the item writes its conversation under the keys of its first run,
    # so storage holds exactly the three linked conversations.
    await standin.configure(latency_ms=0)
    await batches.retry_job(sessions, stack_client, stack_settings, str(job.job_id))
    await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), 120)
    async with sessions() as session:
        retried = await session.get(BatchItem, terminated.id)
        conversations = (
            await session.scalars(select(Conversation).where(Conversation.batch_job_id == job.job_id))
        ).all()
    linked = {c.id: c for c in conversations}
    assert retried.status == ItemStatus.COMPLETED
    assert linked[retried.conversation_id].conversation_id == item_conversation_id(terminated.id)
    expected = {key for c in conversations for key in (c.raw_storage_path, c.final_storage_path)}
    expected |= {enriched_conversation_key(user, c.conversation_id) for c in conversations if c.enriched_at is not None}
    assert len(conversations) == 3
    assert set(await storage.list_keys(storage.conversation_bucket, f"raw/{user}/")) == expected


async def test_recording_an_unreported_item_removes_what_its_run_stored_and_keeps_the_rest(
    sessions: async_sessionmaker, storage: Storage
) -> None:
    user = f"unreported-{uuid.uuid4().hex[:8]}"
    job_id, _total = await batches.create_job(sessions, job_request(["David Chen"], 2, 2, user))
    async with sessions.begin() as session:
        abandoned, reported = (
            await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job_id).order_by(BatchItem.position))
        ).all()
        abandoned.status = ItemStatus.PROCESSING.value
        # Its own report came first: a rejected reply stays for people to read.
        reported.status, reported.error_message = ItemStatus.FAILED.value, "invalid output, see its raw reply"
    bucket = storage.conversation_bucket
    keys = {
        item.id: [
            raw_response_key(user, item_conversation_id(item.id)),
            final_conversation_key(user, item_conversation_id(item.id)),
            batch_request_key(user, item_conversation_id(item.id), 1),
        ]
        for item in (abandoned, reported)
    }
    for key in [*keys[abandoned.id], *keys[reported.id]]:
        await storage.put_json(bucket, key, {"stored by": "a run of the item"})

    recorded = await JobActivities(sessions, storage).record_unreported_items(
        UnreportedItems(
            job_id=job_id,
            finished_at=datetime.now(UTC),
            status=ItemStatus.FAILED,
            reasons={item.id: "its workflow ended (terminated) before it reported an outcome" for item in (abandoned, reported)},
        )
    )

    outcomes = {outcome.item_id: (outcome.status, outcome.error_message) for outcome in recorded.items}
    assert outcomes == {
        abandoned.id: (ItemStatus.FAILED, "its workflow ended (terminated) before it reported an outcome"),
        reported.id: (ItemStatus.FAILED, "invalid output, see its raw reply"),
    }
    for key in keys[abandoned.id]:
        assert await storage.get_bytes_or_none(bucket, key) is None, key
    for key in keys[reported.id]:
        assert await storage.get_bytes_or_none(bucket, key) is not None, key
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
    assert (job.completed_items, job.failed_items) == (1, 1), "the one it recorded is counted, once"


async def test_an_unreported_item_whose_conversation_is_linked_is_recorded_completed_with_it(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    # Its run was terminated between linking the conversation and recording its end: only the
    # report was lost, so the item ends completed, with the conversation, and nothing is removed.
    launched = await batches.launch(sessions, stack_client, stack_settings, job_request(["David Chen"], 1, 1))
    await job_outcome(stack_client.get_workflow_handle(launched.workflow_id))
    async with sessions.begin() as session:
        (item,) = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == launched.job_id))).all()
        item.status = ItemStatus.PROCESSING.value
        await session.execute(
            update(BatchJob)
            .where(BatchJob.id == launched.job_id)
            .values(completed_items=0, successful_items=0)
        )
        conversation = await session.get(Conversation, item.conversation_id)
    reason = "its workflow ended (terminated) before it reported an outcome"

    recorded = await JobActivities(sessions, storage).record_unreported_items(
        UnreportedItems(job_id=launched.job_id, finished_at=datetime.now(UTC), status=ItemStatus.FAILED, reasons={item.id: reason})
    )

    assert [(o.status, o.conversation_id, o.error_message) for o in recorded.items] == [
        (ItemStatus.COMPLETED, conversation.conversation_id, None)
    ]
    async with sessions() as session:
        job = await session.get(BatchJob, launched.job_id)
        row = await session.get(BatchItem, item.id)
    assert (row.status, row.conversation_id) == (ItemStatus.COMPLETED, conversation.id)
    assert (job.completed_items, job.successful_items, job.failed_items) == (1, 1, 0)
    assert await storage.get_bytes_or_none(storage.conversation_bucket, conversation.final_storage_path) is not None


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
    await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), 120)

    final = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (final.status, final.completed, final.successful, final.remaining) == (JobStatus.COMPLETED, 4, 4, 0)
    assert (await standin.stats())["requests"] == 4, "the items in flight during the terminate ran once"
    async with sessions() as session:
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.batch_job_id == job.job_id)
        )
    assert conversations == 4
