"""Every attempt of a Claude call is paid for and counted, and a paid reply is never bought twice:
the real workers, the stand-in over HTTP and the real stack."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from activities import claude_slots
from activities.claude_pacing import CallPacer
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage, raw_response_key
from devtools.devstack import free_port
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, Tier
from models.tables import BatchItem, Conversation
from service import batches
from service.job_outcome import job_outcome
from tests.gate import TcpGate
from tests.helpers import claude_call_progress, eventually
from worker import build_claude_worker

pytestmark = pytest.mark.usefixtures("pipeline_worker")

ONE_ITEM: dict[str, Any] = {
    "personas": ["David Chen"], "arcs": ["Anxiety -> Confidence"], "topics": ["Paying Down Debt"], "tier": Tier.TEMPLATE
}


async def run_one_item(sessions: async_sessionmaker, client: Client, settings: Settings) -> tuple[batches.JobStatusView, BatchItem]:
    job = await batches.launch(sessions, client, settings, batches.LaunchRequest(**ONE_ITEM))
    await job_outcome(client.get_workflow_handle(job.workflow_id))
    return await job_and_item(sessions, client, job.job_id)


async def job_and_item(sessions: async_sessionmaker, client: Client, job_id: uuid.UUID) -> tuple[batches.JobStatusView, BatchItem]:
    async with sessions() as session:
        item = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job_id))).one()
    return await batches.job_status(sessions, str(job_id), client), item


def assert_job_counts(status: batches.JobStatusView, usage: dict) -> None:
    assert (status.input_tokens, status.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    assert (status.cache_write_tokens, status.cache_read_tokens) == (
        usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]
    )
    assert status.cost_usd == pytest.approx(usage["cost_usd"], abs=1e-8)


async def raw_reply(storage: Storage, key: str) -> dict:
    return json.loads(await storage.get_bytes(storage.conversation_bucket, key))


async def test_the_tokens_of_an_attempt_that_broke_mid_stream_are_counted_on_the_item_and_the_job(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl, storage: Storage
) -> None:
    await standin.configure(script=["midstream_overloaded", "ok"])

    status, item = await run_one_item(sessions, stack_client, stack_settings)

    assert item.status == ItemStatus.COMPLETED
    async with sessions() as session:
        conversation = await session.get(Conversation, item.conversation_id)
    answered = (await raw_reply(storage, conversation.raw_storage_path))["message"]["usage"]
    usage = item.usage
    # The broken attempt read the same prompt, and wrote the system prompt to the cache the
    # second attempt read; it had produced its first output token.
    assert usage["input_tokens"] == 2 * answered["input_tokens"]
    assert usage["cache_creation_input_tokens"] == answered["cache_read_input_tokens"] > 0
    assert usage["output_tokens"] == answered["output_tokens"] + 1
    assert usage["cost_usd"] > 0
    assert conversation.generation_metadata["usage"] == {k: v for k, v in usage.items() if k != "rate_limit"}
    assert_job_counts(status, usage)


async def test_a_failed_item_counts_the_tokens_of_every_attempt(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    attempts = 3
    capped = stack_settings.model_copy(update={"claude_max_attempts": attempts})
    await standin.configure(script=["midstream_overloaded"] * attempts)

    status, item = await run_one_item(sessions, stack_client, capped)

    assert item.status == ItemStatus.FAILED
    assert item.error_message == (
        f"gave up after {attempts} attempts; last error: "
        "Claude API error mid-stream (after HTTP 200): Overloaded (overloaded_error)"
    )
    assert (await standin.stats())["requests"] == attempts
    usage = item.usage
    assert usage["input_tokens"] > 0 and usage["input_tokens"] % attempts == 0
    assert usage["output_tokens"] == attempts, "each attempt had produced its first token"
    assert usage["cache_creation_input_tokens"] > 0 and usage["cache_read_input_tokens"] == 2 * usage["cache_creation_input_tokens"]
    assert usage["cost_usd"] > 0
    assert_job_counts(status, usage)
    assert status.failed == 1


async def paid_reply_in_heartbeat(client: Client, item_id: uuid.UUID) -> bool:
    progress = await claude_call_progress(client, item_id)
    return progress is not None and progress.reply is not None


class S3GoneAfterThePromptRead:
    """A worker's S3 that answered the read of the prompt and is gone when the reply is uploaded."""

    def __init__(self, live: Storage, dead: Storage) -> None:
        self.conversation_bucket = live.conversation_bucket
        self.get_bytes = live.get_bytes
        self.put_json = dead.put_json


async def test_an_s3_outage_never_buys_a_second_call(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl, storage: Storage
) -> None:
    """The Claude worker's S3 is down when the call answers; the worker is then lost, and the
    next attempt runs on a worker that reaches S3: it stores the reply the first one paid for."""
    settings = stack_settings.model_copy(
        update={"claude_task_queue": f"claude-{uuid.uuid4()}", "claude_heartbeat_timeout_s": 2.0}
    )
    dead_s3 = Storage(settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}))
    s3_gone = S3GoneAfterThePromptRead(storage, dead_s3)
    claude = create_claude_client(settings)
    async with build_claude_worker(stack_client, settings, sessions, s3_gone, claude):  # type: ignore[arg-type]
        job = await batches.launch(sessions, stack_client, settings, batches.LaunchRequest(**ONE_ITEM))
        async with sessions() as session:
            item_id = await session.scalar(select(BatchItem.id).where(BatchItem.batch_job_id == job.job_id))
        await eventually(lambda: paid_reply_in_heartbeat(stack_client, item_id), "the paid reply is in the heartbeat")
    async with build_claude_worker(stack_client, settings, sessions, storage, claude):
        await job_outcome(stack_client.get_workflow_handle(job.workflow_id))

    status, item = await job_and_item(sessions, stack_client, job.job_id)
    assert item.status == ItemStatus.COMPLETED, item.error_message
    assert (await standin.stats())["requests"] == 1
    async with sessions() as session:
        conversation = await session.get(Conversation, item.conversation_id)
    assert conversation.raw_storage_path == raw_response_key(stack_settings.default_user_id, conversation.conversation_id)
    assert conversation.generation_metadata["attempts"] >= 2, "a later attempt stored the reply"
    raw = await raw_reply(storage, conversation.raw_storage_path)
    answered = raw["message"]["usage"]
    assert (item.usage["input_tokens"], item.usage["output_tokens"]) == (answered["input_tokens"], answered["output_tokens"])
    assert_job_counts(status, item.usage)


async def test_a_postgresql_outage_longer_than_the_call_attempts_cover_fails_no_item(
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    standin: StandinControl,
    storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Claude worker's PostgreSQL (where calls take their turns) is down; the call may send
    2 requests. The worker takes no call without a turn, and tries for one again within a tenth
    of a second here, so the outage outlasts what 2 attempts would cover within seconds instead
    of an hour."""
    monkeypatch.setattr(claude_slots, "OUTAGE_RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(claude_slots, "OUTAGE_RETRY_CAP_S", 0.1)
    refused = 0
    take_turn = CallPacer.take_turn

    async def counted_take_turn(pacer: CallPacer, max_wait_s: float, min_lead_s: float = 0.0) -> float:
        nonlocal refused
        try:
            return await take_turn(pacer, max_wait_s, min_lead_s)
        except OSError:
            refused += 1
            raise

    monkeypatch.setattr(CallPacer, "take_turn", counted_take_turn)
    settings = stack_settings.model_copy(update={"claude_task_queue": f"claude-{uuid.uuid4()}", "claude_max_attempts": 2})
    gate, gated_url = TcpGate.for_database(stack_settings.database_url)  # closed: PostgreSQL is down
    engine = create_engine(settings.model_copy(update={"database_url": gated_url}))
    try:
        async with build_claude_worker(stack_client, settings, create_sessionmaker(engine), storage, create_claude_client(settings)):
            job = await batches.launch(sessions, stack_client, settings, batches.LaunchRequest(**ONE_ITEM))

            async def refused_past_two_attempts() -> bool:
                return refused >= 10

            await eventually(refused_past_two_attempts, "the worker was refused a turn 10 times", timeout_s=60)
            await gate.open()  # PostgreSQL is back
            await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), timeout=60)
    finally:
        await gate.close()
        await engine.dispose()

    status, item = await job_and_item(sessions, stack_client, job.job_id)
    assert item.status == ItemStatus.COMPLETED, item.error_message
    assert (status.failed, status.successful) == (0, 1)
    assert (await standin.stats())["requests"] == 1, "waiting for PostgreSQL sent nothing"


async def test_an_anthropic_refusal_holds_the_item_and_status_says_so_until_the_key_is_fixed(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    capped = stack_settings.model_copy(update={"claude_max_attempts": 1})
    await standin.configure(faults={"401": 1.0})  # a revoked key
    job = await batches.launch(sessions, stack_client, capped, batches.LaunchRequest(**ONE_ITEM))

    async def refused_twice() -> bool:
        return (await standin.stats())["by_outcome"].get("401", 0) >= 2

    await eventually(refused_twice, "the call was refused, waited and was refused again", timeout_s=60)
    [waiting] = (await batches.job_status(sessions, str(job.job_id), stack_client)).waiting_on or []
    assert (waiting.part, waiting.error_type, waiting.items) == ("Anthropic", "anthropic_refused", 1)
    assert waiting.since is not None
    assert waiting.summary == f"Anthropic refused: invalid x-api-key (401 authentication_error) since {waiting.since.astimezone():%H:%M} (1 item)"

    await standin.configure(faults={})  # the operator fixed the key
    await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), timeout=60)

    status, item = await job_and_item(sessions, stack_client, job.job_id)
    assert item.status == ItemStatus.COMPLETED, item.error_message
    assert (status.failed, status.successful, status.waiting_on) == (0, 1, None)
    stats = await standin.stats()
    assert stats["by_outcome"]["ok"] == 1 and stats["requests"] == stats["by_outcome"]["401"] + 1
