"""Outages delay work and never fail it; refusals fail the item at once with their real message.
On the real stack (a PostgreSQL that goes away and comes back, a write the database refuses) and,
for an outage longer than any attempt cap, on the time-skipping server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.data_errors import outage
from activities.errors import ANTHROPIC_REFUSED, DATABASE_UNAVAILABLE, STORAGE_UNAVAILABLE
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, JobStatus, Tier
from models.messages import (
    BatchJobInput,
    ClaudeCallPlan,
    FinishItemInput,
    ItemPage,
    ItemPageRequest,
    JobCounters,
    JobPlan,
    JobStatusChange,
    RefusalDetails,
)
from models.tables import BatchItem, BatchJob, Conversation
from models.workflow_ids import item_workflow_id, job_workflow_id, message_batches_workflow_id
from service import batches
from service.job_outcome import job_outcome
from service.outages import Outage, job_outages
from tests.conftest import REPO
from tests.fakes import FakeActivities, FakeBatch
from tests.gate import TcpGate
from tests.helpers import eventually, step_tries
from worker import build_claude_worker, build_main_worker, build_workers
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow

TWO_ITEMS: dict[str, Any] = {
    "personas": ["David Chen", "Maria Gonzalez"],
    "arcs": ["Couple Conflict -> Alignment"],
    "topics": ["Essential Estate Planning"],
    "tier": Tier.TEMPLATE,
}


async def items_of(sessions: async_sessionmaker, job_id: uuid.UUID) -> list[BatchItem]:
    async with sessions() as session:
        return list((await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job_id))).all())


# --- a refusal fails the item at once (issue 7, item 13) ------------------------------------


@contextlib.asynccontextmanager
async def link_writes_the_business_key(sessions: async_sessionmaker, job_name: str) -> AsyncIterator[None]:
    """The old system's bug, injected in the real database: for the named job, the link stores the
    conversation's business key instead of its primary key."""
    function = f"link_business_key_{uuid.uuid4().hex[:8]}"
    async with sessions.begin() as session:
        await session.execute(
            text(
                f"""
                CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.conversation_id IS NOT NULL AND EXISTS (
                        SELECT 1 FROM batch_jobs WHERE id = NEW.batch_job_id AND name = '{job_name}'
                    ) THEN
                        NEW.conversation_id := (SELECT conversation_id FROM conversations WHERE id = NEW.conversation_id);
                    END IF;
                    RETURN NEW;
                END $$
                """
            )
        )
        await session.execute(
            text(f"CREATE TRIGGER {function} BEFORE UPDATE ON batch_items FOR EACH ROW EXECUTE FUNCTION {function}()")
        )
    try:
        yield
    finally:
        async with sessions.begin() as session:
            await session.execute(text(f"DROP TRIGGER {function} ON batch_items"))
            await session.execute(text(f"DROP FUNCTION {function}()"))


@pytest.mark.usefixtures("pipeline_worker")
async def test_a_foreign_key_violation_fails_the_item_at_once_with_the_constraint(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    name = f"link-business-key-{uuid.uuid4().hex[:8]}"
    async with link_writes_the_business_key(sessions, name):
        job = await batches.launch(sessions, stack_client, stack_settings, batches.LaunchRequest(**TWO_ITEMS, name=name))
        # Before the classifier, the violation was retried for minutes (20 attempts, 30 s apart).
        await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), timeout=60)

    async with sessions() as session:
        row = await session.get(BatchJob, job.job_id)
    items = await items_of(sessions, job.job_id)
    assert row.status == JobStatus.FAILED and (row.failed_items, row.successful_items) == (2, 0)
    for item in items:
        assert item.status == ItemStatus.FAILED and item.conversation_id is None
        assert item.error_message is not None
        assert item.error_message.startswith(
            'database refused the write: insert or update on table "batch_items" violates foreign key constraint '
            '"fk_batch_items_conversation_id_conversations" (Key (conversation_id)=('
        )
        # One try of the step that links (local, in the item's worker), no retry as an activity.
        history = await stack_client.get_workflow_handle(item_workflow_id(item.id)).fetch_history()
        assert step_tries(history, "complete_item") == ["local"]


# --- an outage delays the items, and status says what they wait for -------------------------


async def two_items_in_flight(
    sessions: async_sessionmaker, client: Client, settings: Settings, standin: StandinControl
) -> batches.LaunchedJob:
    """A job of two items, both in their (1.5 s) Claude calls: every step before the call is done."""
    await standin.configure(latency_ms=1500)
    job = await batches.launch(sessions, client, settings, batches.LaunchRequest(**TWO_ITEMS, concurrency=2))

    async def both_calls_arrived() -> bool:
        return (await standin.stats())["requests"] == 2

    await eventually(both_calls_arrived, "both items' Claude calls reached the stand-in", timeout_s=30)
    return job


async def both_items_waiting(sessions: async_sessionmaker, client: Client, job_id: uuid.UUID) -> Outage:
    """The one `waiting_on` entry of `status`, once it counts both items."""
    async def waiting_on() -> list[Outage] | None:
        return (await batches.job_status(sessions, str(job_id), client)).waiting_on

    async def both_wait() -> bool:
        outages = await waiting_on()
        return bool(outages and outages[0].items == 2)

    await eventually(both_wait, "status shows both items waiting", timeout_s=60)
    outages = await waiting_on()
    assert outages is not None
    [outage] = outages
    return outage


@pytest.fixture
async def gated_database(stack_settings: Settings) -> AsyncIterator[tuple[TcpGate, Settings]]:
    """Settings whose database is reached through a gate the test opens and closes, with task
    queues of their own."""
    gate, url = TcpGate.for_database(stack_settings.database_url)
    await gate.open()
    settings = stack_settings.model_copy(
        update={"database_url": url, "task_queue": f"gated-{uuid.uuid4()}", "claude_task_queue": f"gated-claude-{uuid.uuid4()}"}
    )
    try:
        yield gate, settings
    finally:
        await gate.close()


@pytest.fixture
async def gated_worker(
    stack_client: Client, storage: Storage, gated_database: tuple[TcpGate, Settings]
) -> AsyncIterator[tuple[TcpGate, Settings]]:
    """The real workers, whose every database connection goes through the gate."""
    _, settings = gated_database
    engine = create_engine(settings)
    async with contextlib.AsyncExitStack() as running:
        for worker in build_workers(stack_client, settings, create_sessionmaker(engine), storage, create_claude_client(settings)):
            await running.enter_async_context(worker)
        yield gated_database
    await engine.dispose()


def cli_status(settings: Settings, job_id: uuid.UUID) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    assert settings.temporal_address and settings.s3_endpoint_url and settings.anthropic_base_url
    env.update(
        DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=settings.temporal_address,
        S3_ENDPOINT_URL=settings.s3_endpoint_url,
        ANTHROPIC_BASE_URL=settings.anthropic_base_url,
        LOG_FORMAT="console",
    )
    return subprocess.run(
        [sys.executable, "starter.py", "status", str(job_id)], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


async def test_a_database_outage_delays_the_items_and_status_says_so(
    sessions: async_sessionmaker,
    stack_client: Client,
    standin: StandinControl,
    gated_worker: tuple[TcpGate, Settings],
) -> None:
    gate, settings = gated_worker
    job = await two_items_in_flight(sessions, stack_client, settings, standin)

    outage_began = datetime.now(UTC)
    await gate.close()  # PostgreSQL is gone for the workers: the Claude calls end, linking cannot
    waiting_on = await both_items_waiting(sessions, stack_client, job.job_id)
    assert waiting_on.part == "PostgreSQL" and waiting_on.error_type == DATABASE_UNAVAILABLE
    assert waiting_on.last_error.startswith("PostgreSQL unavailable: ")
    since = waiting_on.since
    assert since is not None and outage_began - timedelta(seconds=30) < since <= datetime.now(UTC)
    assert waiting_on.summary.startswith(f"waiting for PostgreSQL since {since.astimezone():%H:%M} (2 items): ")

    # Without the database, `status` shows the workflow's view, says what is down, and exits 3.
    shown = await asyncio.to_thread(cli_status, settings, job.job_id)
    assert shown.returncode == 3
    assert "waiting for PostgreSQL since" in shown.stdout and "(2 items)" in shown.stdout
    assert shown.stderr.startswith(f"error: PostgreSQL at 127.0.0.1:{gate.port}/") and len(shown.stderr.splitlines()) == 1

    await gate.open()  # PostgreSQL is back: the retries go through
    await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), timeout=90)

    async with sessions() as session:
        row = await session.get(BatchJob, job.job_id)
        linked = (await session.scalars(select(Conversation.id).where(Conversation.batch_job_id == job.job_id))).all()
    items = await items_of(sessions, job.job_id)
    assert row.status == JobStatus.COMPLETED and (row.completed_items, row.successful_items, row.failed_items) == (2, 2, 0)
    assert sorted((i.conversation_id for i in items), key=str) == sorted(linked, key=str) and all(i.status == ItemStatus.COMPLETED for i in items)
    assert (await batches.job_status(sessions, str(job.job_id), stack_client)).waiting_on is None
    assert (await standin.stats())["requests"] == 2, "the outage bought no second Claude call"


@pytest.fixture
async def gated_storage_worker(
    stack_client: Client, stack_settings: Settings, sessions: async_sessionmaker, storage: Storage
) -> AsyncIterator[tuple[TcpGate, Settings]]:
    """The real workers, whose data steps reach S3 through a gate the test opens and closes (the
    Claude call's own upload does not: what an S3 outage does to a paid call is not this test's)."""
    assert stack_settings.s3_endpoint_url is not None
    gate, endpoint = TcpGate.for_http(stack_settings.s3_endpoint_url)
    await gate.open()
    settings = stack_settings.model_copy(
        update={"task_queue": f"gated-{uuid.uuid4()}", "claude_task_queue": f"gated-claude-{uuid.uuid4()}"}
    )
    gated_storage = Storage(settings.model_copy(update={"s3_endpoint_url": endpoint}))
    async with (
        build_main_worker(stack_client, settings, sessions, gated_storage, create_claude_client(settings)),
        build_claude_worker(stack_client, settings, sessions, storage, create_claude_client(settings)),
    ):
        yield gate, settings
    await gate.close()


async def test_a_storage_outage_delays_the_items_and_status_says_so(
    sessions: async_sessionmaker,
    stack_client: Client,
    standin: StandinControl,
    gated_storage_worker: tuple[TcpGate, Settings],
) -> None:
    gate, settings = gated_storage_worker
    job = await two_items_in_flight(sessions, stack_client, settings, standin)

    await gate.close()  # S3 is gone for the data steps: the answers cannot be stored
    waiting_on = await both_items_waiting(sessions, stack_client, job.job_id)
    assert (waiting_on.part, waiting_on.error_type) == ("S3 storage", STORAGE_UNAVAILABLE)
    assert waiting_on.last_error.startswith("S3 storage unavailable: Could not connect to the endpoint URL")
    assert waiting_on.summary.startswith("waiting for S3 storage since ")

    await gate.open()
    await asyncio.wait_for(job_outcome(stack_client.get_workflow_handle(job.workflow_id)), timeout=90)

    items = await items_of(sessions, job.job_id)
    assert [i.status for i in items] == [ItemStatus.COMPLETED] * 2 and all(i.conversation_id for i in items)
    assert (await standin.stats())["requests"] == 2




# --- an outage longer than any attempt cap, on the time-skipping server ---------------------

OUTAGE = timedelta(minutes=15)


class DatabaseDownFor(FakeActivities):
    """The job's start, its item listing, its status write and every item's report fail as
    PostgreSQL being unavailable until each has waited OUTAGE (time the test server skips)."""

    def __init__(self, batch: FakeBatch, client: Client) -> None:
        super().__init__(batch, client)
        self.failed_attempts = 0

    def _during_the_outage(self) -> None:
        info = activity.info()
        if info.current_attempt_scheduled_time - info.scheduled_time < OUTAGE:
            self.failed_attempts += 1
            raise outage(DATABASE_UNAVAILABLE, "[Errno 111] Connection refused")

    @activity.defn(name="start_job")
    async def start_job(self, job_id: uuid.UUID) -> JobPlan:
        self._during_the_outage()
        return await super().start_job(job_id)

    @activity.defn(name="list_queued_items")
    async def list_queued_items(self, request: ItemPageRequest) -> ItemPage:
        self._during_the_outage()
        return await super().list_queued_items(request)

    @activity.defn(name="set_job_status")
    async def set_job_status(self, change: JobStatusChange) -> JobCounters:
        self._during_the_outage()
        return await super().set_job_status(change)

    @activity.defn(name="finish_item")
    async def finish_item(self, request: FinishItemInput) -> ItemStatus:
        self._during_the_outage()
        return await super().finish_item(request)


async def test_a_fifteen_minute_outage_delays_every_data_step_and_fails_nothing(own_ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3)
    fakes = DatabaseDownFor(batch, own_ts_client)

    async with Worker(own_ts_client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow], activities=fakes.all()):
        progress = await asyncio.wait_for(
            own_ts_client.execute_workflow(
                BatchJobWorkflow.run,
                BatchJobInput(job_id=batch.job_id, claude=ClaudeCallPlan()),
                id=job_workflow_id(batch.job_id),
                task_queue=task_queue,
            ),
            timeout=120,
        )

    assert progress.status == JobStatus.COMPLETED and batch.job_status == JobStatus.COMPLETED
    assert [i.status for i in batch.items] == [ItemStatus.COMPLETED] * 3
    assert fakes.failed_attempts > 20 * 6, "each of the 6 steps outlived the old 20-attempt cap"


# --- an Anthropic refusal at the Message Batches endpoints shows like an outage --------------

REFUSED_SINCE = datetime(2026, 12, 7, 2, 3, tzinfo=UTC)


@activity.defn(name="submit_batch")
async def submit_refused(_: str) -> None:
    raise ApplicationError(
        "Anthropic refused: invalid x-api-key (401 authentication_error)",
        RefusalDetails(reason="invalid x-api-key (401 authentication_error)", since=REFUSED_SINCE),
        type=ANTHROPIC_REFUSED,
    )


@workflow.defn(name="RefusedMessageBatches")
class RefusedMessageBatches:
    """A job's Message Batches workflow whose submission the API refuses, retried meanwhile."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            submit_refused, "batch", start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(minutes=1)),
        )


async def test_a_refusal_at_the_batch_endpoints_shows_in_status_like_an_outage(stack_client: Client, task_queue: str) -> None:
    job_id = uuid.uuid4()
    async with Worker(
        stack_client, task_queue=task_queue, workflows=[RefusedMessageBatches], activities=[submit_refused],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await stack_client.start_workflow(
            RefusedMessageBatches.run, id=message_batches_workflow_id(job_id), task_queue=task_queue
        )
        try:
            async def refused() -> list[Outage]:
                return await job_outages(stack_client, job_id)

            await eventually(refused, "status shows the refusal")
            [waiting] = await job_outages(stack_client, job_id)
        finally:
            await handle.terminate()

    assert (waiting.part, waiting.error_type, waiting.since) == ("Anthropic", ANTHROPIC_REFUSED, REFUSED_SINCE)
    assert waiting.summary == (
        f"Anthropic refused: invalid x-api-key (401 authentication_error) since {REFUSED_SINCE.astimezone():%H:%M} "
        "(job step submit_batch)"
    )
