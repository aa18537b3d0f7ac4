"""Message Batches mode on the real stack: the Temporal dev server, PostgreSQL, SeaweedFS and the
stand-in's Message Batches API through the real SDK, with the real worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import anthropic
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.conversation import ConversationDocument
from models.enums import DeliveryMode, ItemStatus, JobStatus, MessageBatchState, Tier
from models.tables import BatchItem, BatchJob, Conversation, MessageBatch, MessageBatchRequest
from models.workflow_ids import message_batches_workflow_id
from service import batches
from service.job_outcome import job_outcome
from tests.helpers import eventually, histories_quoting, launch_and_wait

pytestmark = pytest.mark.usefixtures("pipeline_worker")

PERSONAS = ["David Chen", "Maria Gonzalez"]
ARCS = ["Couple Conflict -> Alignment", "Grief -> Acceptance"]
TOPICS = ["Essential Estate Planning"]


async def rows_of(sessions: async_sessionmaker, job_id: uuid.UUID) -> tuple[BatchJob, list[BatchItem], list[Conversation]]:
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
        items = (
            await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job_id).order_by(BatchItem.position))
        ).all()
        conversations = (await session.scalars(select(Conversation).where(Conversation.batch_job_id == job_id))).all()
    return job, list(items), list(conversations)


async def test_a_batch_mode_job_completes_with_every_item_linked_at_half_the_price(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage, standin: StandinControl
) -> None:
    launched = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=PERSONAS, arcs=ARCS, topics=TOPICS,
        tier=Tier.TEMPLATE, user="batcher", mode=DeliveryMode.BATCH,
    )

    job, items, conversations = await rows_of(sessions, launched.job_id)
    assert job.status == JobStatus.COMPLETED and job.mode == DeliveryMode.BATCH
    assert (job.completed_items, job.successful_items, job.failed_items) == (4, 4, 0)
    assert {item.status for item in items} == {ItemStatus.COMPLETED}
    assert {item.conversation_id for item in items} == {c.id for c in conversations}
    stats = await standin.stats()
    assert stats["requests"] == 0, "no online call in batch mode"
    assert stats["batch_requests"] == 4 and stats["batches"] >= 1
    for conversation in conversations:
        raw = json.loads(await storage.get_bytes(storage.conversation_bucket, conversation.raw_storage_path))
        assert raw["message_batch_id"].startswith("msgbatch_") and raw["custom_id"]
        assert (conversation.provider, conversation.provider_host) == ("offline-standin", "127.0.0.1")
        ConversationDocument.model_validate(
            json.loads(await storage.get_bytes(storage.conversation_bucket, conversation.final_storage_path))
        )
    async with sessions() as session:
        message_batches = (await session.scalars(select(MessageBatch).where(MessageBatch.batch_job_id == job.id))).all()
    assert sum(b.request_count for b in message_batches) == 4
    assert all(b.status == MessageBatchState.ENDED and b.results_collected_at for b in message_batches)

    status = await batches.job_status(sessions, str(job.id), stack_client)
    assert status.mode == "batch" and status.open_batches == 0
    # The prompts live in storage: no item's history carries one, staged or resolved.
    for prompt_text in ("Persona: David Chen", "You write training conversations"):
        assert await histories_quoting(stack_client, [item.id for item in items], prompt_text) == []
    assert status.cost_usd > 0 and status.saving_usd == pytest.approx(status.cost_usd)


async def test_errored_expired_and_malformed_results_end_as_their_kind_says(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    # Drawn in the order the requests reach the stand-in: one refused for good, one expired
    # (resubmitted), one malformed (repaired in a later batch), one fine.
    await standin.configure(script=["400", "expired", "malformed", "ok"])
    launched = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=PERSONAS, arcs=ARCS, topics=TOPICS,
        tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH,
    )

    job, items, _conversations = await rows_of(sessions, launched.job_id)
    assert (job.successful_items, job.failed_items) == (3, 1)
    failed = [item for item in items if item.status == ItemStatus.FAILED]
    assert failed[0].error_message is not None
    assert failed[0].error_message.startswith("Claude API refused the request in a Message Batch")
    assert "invalid_request_error" in failed[0].error_message
    stats = await standin.stats()
    # 4 first requests, the expired one again, the malformed one's repair.
    assert stats["batch_requests"] == 6 and stats["batches"] >= 2 and stats["requests"] == 0


async def test_retry_sends_a_failed_item_in_a_new_request_of_its_own(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(script=["400"])
    launched = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=PERSONAS[:1], arcs=ARCS[:1], topics=TOPICS,
        tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH,
    )  # fmt: skip
    _job, (failed,), _conversations = await rows_of(sessions, launched.job_id)
    assert failed.status == ItemStatus.FAILED

    await batches.retry_job(sessions, stack_client, stack_settings, str(launched.job_id))
    await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(launched.workflow_id)), 120)

    job, (item,), conversations = await rows_of(sessions, launched.job_id)
    assert (job.status, job.successful_items, job.failed_items) == (JobStatus.COMPLETED, 1, 0)
    assert item.status == ItemStatus.COMPLETED and item.conversation_id == conversations[0].id
    async with sessions() as session:
        custom_ids = (
            await session.scalars(select(MessageBatchRequest.custom_id).where(MessageBatchRequest.batch_item_id == item.id))
        ).all()
    assert len(set(custom_ids)) == 2, "the retry's request is a new one, not the refused one again"
    assert (await standin.stats())["batch_requests"] == 2


async def test_cancel_cancels_the_open_batch_and_ends_every_item_cancelled(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(batch_processing_s=600)
    launched = await batches.launch(
        sessions, stack_client, stack_settings,
        batches.LaunchRequest(personas=PERSONAS, arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH),
    )

    async def batch_is_open() -> bool:
        return (await standin.stats())["batch_requests"] == 4

    await eventually(batch_is_open, "all four requests are in an open batch")
    handle = stack_client.get_workflow_handle(launched.workflow_id)
    await batches.control_job(sessions, stack_client, str(launched.job_id), "cancel")
    await job_outcome(handle)

    job, items, conversations = await rows_of(sessions, launched.job_id)
    assert job.status == JobStatus.CANCELLED
    assert {item.status for item in items} == {ItemStatus.CANCELLED} and job.cancelled_items == 4
    assert conversations == []
    async with anthropic.AsyncAnthropic(api_key="test", base_url=stack_settings.anthropic_base_url) as claude:

        async def cancelled_at_the_api() -> bool:
            listed = [b async for b in claude.messages.batches.list(limit=5)]
            return listed[0].processing_status == "ended" and listed[0].request_counts.canceled == 4

        await eventually(cancelled_at_the_api, "the open batch is cancelled at the API")


async def test_cancel_while_requests_gather_ends_them_cancelled_and_sends_none(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    gathering = stack_settings.model_copy(update={"message_batch_gather_s": 600})
    launched = await batches.launch(
        sessions, stack_client, gathering,
        batches.LaunchRequest(personas=PERSONAS, arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH),
    )

    async def requests_of_job() -> list[MessageBatchRequest]:
        async with sessions() as session:
            query = select(MessageBatchRequest).where(MessageBatchRequest.batch_job_id == launched.job_id)
            return list((await session.scalars(query)).all())

    async def all_staged() -> bool:
        return len(await requests_of_job()) == 4

    await eventually(all_staged, "all four requests wait for a batch")
    await batches.control_job(sessions, stack_client, str(launched.job_id), "cancel")
    await job_outcome(stack_client.get_workflow_handle(launched.workflow_id))

    job, items, _ = await rows_of(sessions, launched.job_id)
    assert job.status == JobStatus.CANCELLED and {item.status for item in items} == {ItemStatus.CANCELLED}
    requests = await requests_of_job()
    assert {(r.message_batch_id, r.result_type) for r in requests} == {(None, "canceled")}
    assert (await standin.stats())["batches"] == 0


async def test_pause_sends_no_new_batch_while_the_open_one_finishes(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(batch_processing_s=2)
    two_at_a_time = stack_settings.model_copy(update={"message_batch_in_flight_items": 2})
    launched = await batches.launch(
        sessions, stack_client, two_at_a_time,
        batches.LaunchRequest(personas=PERSONAS, arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH),
    )

    async def first_batch_open() -> bool:
        return (await standin.stats())["batches"] == 1

    await eventually(first_batch_open, "the first batch is open")
    await batches.control_job(sessions, stack_client, str(launched.job_id), "pause")

    async def first_two_done() -> bool:
        _job, items, _ = await rows_of(sessions, launched.job_id)
        return sum(item.status == ItemStatus.COMPLETED for item in items) == 2

    await eventually(first_two_done, "the open batch's items completed while paused")
    job, _, _ = await rows_of(sessions, launched.job_id)
    assert job.status == JobStatus.PAUSED
    assert (await standin.stats())["batches"] == 1, "no new batch while paused"

    await batches.control_job(sessions, stack_client, str(launched.job_id), "resume")
    await job_outcome(stack_client.get_workflow_handle(launched.workflow_id))
    job, _items, _ = await rows_of(sessions, launched.job_id)
    assert (job.status, job.successful_items) == (JobStatus.COMPLETED, 4)
    assert (await standin.stats())["batches"] == 2


async def test_the_same_job_in_both_modes_yields_the_same_conversations(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    documents: dict[DeliveryMode, list[Any]] = {}
    for mode in DeliveryMode:
        launched = await launch_and_wait(
            sessions, stack_client, stack_settings, personas=PERSONAS, arcs=ARCS, topics=TOPICS,
            tier=Tier.TEMPLATE, user="twin", mode=mode,
        )
        job, items, conversations = await rows_of(sessions, launched.job_id)
        assert (job.status, job.successful_items) == (JobStatus.COMPLETED, 4)
        by_id = {c.id: c for c in conversations}
        documents[mode] = []
        for item in items:
            assert item.conversation_id is not None
            conversation = by_id[item.conversation_id]
            final = json.loads(await storage.get_bytes(storage.conversation_bucket, conversation.final_storage_path))
            documents[mode].append((item.position, conversation.turn_count, conversation.title, final["turns"]))
    assert documents[DeliveryMode.ONLINE] == documents[DeliveryMode.BATCH]


async def test_requests_staged_while_batches_claim_them_all_go_out_once_and_the_workflow_hears_of_few(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    # 40 requests, 5 to a batch, gathered for 0.1 s: stagings keep racing the claims. The
    # Message Batches workflow hears of the first request of a gathering and of each that fills
    # a batch, never of the others, and none of them is left behind.
    small_batches = stack_settings.model_copy(update={"message_batch_max_requests": 5, "message_batch_gather_s": 0.1})
    launched = await launch_and_wait(
        sessions, stack_client, small_batches, personas=PERSONAS, arcs=ARCS, topics=TOPICS, samples=10,
        tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH,
    )  # fmt: skip

    job, _items, conversations = await rows_of(sessions, launched.job_id)
    assert (job.status, job.successful_items, len(conversations)) == (JobStatus.COMPLETED, 40, 40)
    async with sessions() as session:
        requests = (
            await session.scalars(select(MessageBatchRequest).where(MessageBatchRequest.batch_job_id == job.id))
        ).all()
        sizes = (await session.scalars(select(MessageBatch.request_count).where(MessageBatch.batch_job_id == job.id))).all()
    assert len(requests) == 40 and all(r.message_batch_id for r in requests)
    assert sum(sizes) == 40 and max(sizes) <= 5
    assert (await standin.stats())["batch_requests"] == 40, "no request went out twice"
    history = await stack_client.get_workflow_handle(message_batches_workflow_id(job.id)).fetch_history()
    told = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert "request_ready" not in told
    assert 1 <= told.count("requests_waiting") < 40, told
