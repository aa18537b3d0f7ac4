"""The whole pipeline on the real stack: Temporal dev server, PostgreSQL, SeaweedFS, the Claude
stand-in over HTTP with the real SDK, and the real worker."""

from __future__ import annotations

import itertools
import json

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from brightrun.settings import Settings
from brightrun.storage import Storage, final_conversation_key, raw_response_key
from devtools.standin_control import StandinControl
from models.conversation import ConversationDocument
from models.enums import ItemStatus, JobStatus, Tier
from models.tables import BatchItem, BatchJob, Conversation
from models.workflow_ids import item_workflow_id
from tests.helpers import histories_quoting, launch_and_wait

pytestmark = pytest.mark.usefixtures("pipeline_worker")


PERSONAS = ["David Chen", "Maria Gonzalez"]
ARCS = ["Couple Conflict -> Alignment", "Grief -> Acceptance"]
TOPICS = ["Essential Estate Planning", "Paying Down Debt"]


async def test_a_batch_runs_end_to_end_and_links_every_item(
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    storage: Storage,
    standin: StandinControl,
) -> None:
    job = await launch_and_wait(
        sessions,
        stack_client,
        stack_settings,
        personas=PERSONAS,
        arcs=ARCS,
        topics=TOPICS,
        tier=Tier.TEMPLATE,
        template="00000000-0000-0000-0000-000000000000",
        concurrency=3,
        user="alice",
    )

    async with sessions() as session:
        row = await session.get(BatchJob, job.job_id)
        items = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))).all()
        conversations = {
            c.id: c
            for c in (await session.scalars(select(Conversation).where(Conversation.batch_job_id == job.job_id))).all()
        }
    assert row.status == JobStatus.COMPLETED
    assert (row.total_items, row.completed_items, row.successful_items, row.failed_items) == (8, 8, 8, 0)
    assert row.started_at is not None and row.completed_at >= row.started_at
    assert row.input_tokens > 0 and row.output_tokens > 0
    assert len(items) == 8 and len(conversations) == 8
    for item in items:
        assert item.status == ItemStatus.COMPLETED and item.error_message is None
        # The link is the primary key of the conversation row, not its business key.
        conversation = conversations[item.conversation_id]
        assert conversation.raw_storage_path == raw_response_key("alice", conversation.conversation_id)
        assert conversation.final_storage_path == final_conversation_key("alice", conversation.conversation_id)
        raw = json.loads(await storage.get_bytes(storage.conversation_bucket, conversation.raw_storage_path))
        assert raw["generated_by"] == "offline-standin"
        # Who wrote it is on the row: the stand-in, at the host ANTHROPIC_BASE_URL names.
        assert (conversation.provider, conversation.provider_host) == ("offline-standin", "127.0.0.1")
        final = ConversationDocument.model_validate(
            json.loads(await storage.get_bytes(storage.conversation_bucket, conversation.final_storage_path))
        )
        assert final.metadata.training_topic == item.topic
        assert len(final.turns) == conversation.turn_count
    stats = await standin.stats()
    assert stats["requests"] == 8
    # Each item's line in the web UI's workflow list: persona · arc · topic.
    summaries = [
        await (await stack_client.get_workflow_handle(item_workflow_id(item.id)).describe()).static_summary()
        for item in items
    ]
    assert sorted(summaries, key=str) == sorted(" · ".join(combination) for combination in itertools.product(PERSONAS, ARCS, TOPICS))
    # The prompts live in storage: no item's history carries one (the persona's name is in
    # every resolved prompt, the template's instructions in every system prompt).
    for prompt_text in ("Persona: David Chen", "You write training conversations"):
        assert await histories_quoting(stack_client, [item.id for item in items], prompt_text) == []


async def test_the_real_error_message_reaches_the_item_row(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(script=["400"])

    job = await launch_and_wait(
        sessions,
        stack_client,
        stack_settings,
        personas=["Priya Patel"],
        arcs=["Anxiety -> Confidence"],
        topics=["College Savings Plans"],
        tier=Tier.SCENARIO,
    )

    async with sessions() as session:
        row = await session.get(BatchJob, job.job_id)
        item = await session.scalar(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))
    assert item.status == ItemStatus.FAILED
    assert item.error_message.startswith("Claude API 400: ")
    assert "Unknown error" not in item.error_message
    assert item.conversation_id is None
    assert row.status == JobStatus.FAILED
    assert (row.failed_items, row.successful_items) == (1, 0)
    assert "all 1 items failed" in row.error_message
    assert (await standin.stats())["requests"] == 1, "a 400 is never retried"


async def test_samples_make_distinct_conversations_of_one_combination(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    job = await launch_and_wait(
        sessions,
        stack_client,
        stack_settings,
        personas=["David Chen", "Maria Gonzalez"],
        arcs=["Couple Conflict -> Alignment"],
        topics=["Essential Estate Planning"],
        tier=Tier.TEMPLATE,
        samples=3,
        user="alice",
    )

    async with sessions() as session:
        row = await session.get(BatchJob, job.job_id)
        items = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))).all()
        conversations = (await session.scalars(select(Conversation).where(Conversation.batch_job_id == job.job_id))).all()
    assert (row.total_items, row.successful_items) == (6, 6)
    assert sorted(i.position for i in items) == list(range(6))
    assert all(i.status == ItemStatus.COMPLETED for i in items)
    assert len({i.conversation_id for i in items}) == 6 and len(conversations) == 6
    assert len({c.final_storage_path for c in conversations}) == 6
    finals = [await storage.get_bytes(storage.conversation_bucket, c.final_storage_path) for c in conversations]
    turns_by_persona: dict[str, set[str]] = {}
    for final in finals:
        document = ConversationDocument.model_validate(json.loads(final))
        turns_by_persona.setdefault(document.metadata.persona, set()).add(json.dumps([t.model_dump() for t in document.turns]))
    # Each combination's three samples are three different conversations.
    assert {persona: len(turns) for persona, turns in turns_by_persona.items()} == {"David Chen": 3, "Maria Gonzalez": 3}


async def test_a_continued_run_of_a_job_carries_its_summary_in_its_details(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings
) -> None:
    # A history this short makes the job continue as new on the way.
    settings = stack_settings.model_copy(update={"history_event_limit": 50})
    job = await launch_and_wait(
        sessions, stack_client, settings, personas=PERSONAS, arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE,
        concurrency=2, name="summary test",
    )

    summary = "summary test · 8 items · template · online"
    first, *continued = [stack_client.get_workflow_handle(job.workflow_id, run_id=run_id)
                         for run_id in await _runs(stack_client, job.workflow_id)]
    assert continued, "the job continued as new"
    assert await (await first.describe()).static_summary() == summary
    for run in continued:
        # The server gives a continued run no static summary (Temporal 1.32, SDK 1.35); its details carry it.
        assert await (await run.describe()).static_summary() is None
        details = (await run.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
        assert details.startswith(f"{summary}\n\n**")


async def _runs(client: Client, workflow_id: str) -> list[str]:
    """A workflow's run ids, first to last, each run's continue-as-new naming the next."""
    run_ids = [(await client.get_workflow_handle(workflow_id).describe()).raw_description.workflow_execution_info.first_run_id]
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_ids[-1]).fetch_history()
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            return run_ids
        run_ids.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)
