"""Message Batches mode through crashes: real `python worker.py` processes on a stack of its own,
SIGKILLed while a batch is open, and a submission whose attempt died before it recorded the
batch it created."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.message_batches import MessageBatchActivities
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.outage_controls import WorkerPool
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, ItemStatus, JobStatus, Tier
from models.messages import SubmitBatchInput
from models.tables import BatchItem, BatchJob, MessageBatch, MessageBatchRequest
from service import batches
from service.job_outcome import job_outcome
from tests.helpers import eventually
from worker import load_prices

PERSONAS = ["David Chen", "Maria Gonzalez"]
ARCS = ["Couple Conflict -> Alignment", "Grief -> Acceptance"]
TOPICS = ["Essential Estate Planning"]
FAST_BATCHES = {"message_batch_gather_s": 0.3, "message_batch_poll_initial_s": 0.3, "message_batch_poll_max_s": 1.0}


@pytest.fixture
def recovery_settings(outage_stack: tuple[Path, dict[str, str]]) -> Settings:
    _root, env = outage_stack
    return devstack.standin_settings(env, **FAST_BATCHES)


@pytest.fixture
def workers(outage_stack: tuple[Path, dict[str, str]], recovery_settings: Settings) -> Iterator[WorkerPool]:
    root, env = outage_stack
    pool = WorkerPool(
        root,
        {
            **env,
            "TASK_QUEUE": recovery_settings.task_queue,
            "CLAUDE_TASK_QUEUE": recovery_settings.claude_task_queue,
            **{key.upper(): str(value) for key, value in FAST_BATCHES.items()},
        },
    )
    yield pool
    pool.kill()


@pytest.fixture
async def recovery_sessions(recovery_settings: Settings) -> AsyncIterator[async_sessionmaker]:
    engine = create_engine(recovery_settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def recovery_standin(recovery_settings: Settings) -> AsyncIterator[StandinControl]:
    assert recovery_settings.anthropic_base_url is not None
    control = StandinControl(recovery_settings.anthropic_base_url)
    await control.reset()
    yield control
    await control.reset()


async def test_a_worker_killed_while_a_batch_is_open_loses_nothing_and_submits_nothing_twice(
    workers: WorkerPool,
    recovery_settings: Settings,
    recovery_sessions: async_sessionmaker,
    recovery_standin: StandinControl,
) -> None:
    workers.start(1)
    await recovery_standin.configure(batch_processing_s=3)
    client = await connect(recovery_settings)
    launched = await batches.launch(
        recovery_sessions, client, recovery_settings,
        batches.LaunchRequest(personas=PERSONAS, arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH),
    )

    async def batch_open() -> bool:
        return (await recovery_standin.stats())["batch_requests"] == 4

    await eventually(batch_open, "all four requests are in an open batch")
    assert workers.kill(), "the worker was running"
    workers.start(1)
    await job_outcome(client.get_workflow_handle(launched.workflow_id))

    async with recovery_sessions() as session:
        job = await session.get(BatchJob, launched.job_id)
        items = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job.id))).all()
    assert (job.status, job.successful_items) == (JobStatus.COMPLETED, 4)
    assert all(item.status == ItemStatus.COMPLETED and item.conversation_id for item in items)
    stats = await recovery_standin.stats()
    assert (stats["batches"], stats["batch_requests"], stats["requests"]) == (1, 4, 0)


async def test_a_retried_submission_adopts_the_batch_its_earlier_attempt_created(
    recovery_settings: Settings, recovery_sessions: async_sessionmaker, recovery_standin: StandinControl
) -> None:
    """The first attempt created the batch and died before recording its id: the retry finds it
    at the API instead of creating a second one."""
    await recovery_standin.configure(batch_processing_s=600)
    client = await connect(recovery_settings)
    # A job whose items stage their requests; no worker runs, so the steps are driven here.
    job_id, _total = await batches.create_job(
        recovery_sessions,
        batches.LaunchRequest(personas=PERSONAS[:1], arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH),
    )
    async with recovery_sessions.begin() as session:
        item_ids = (await session.scalars(select(BatchItem.id).where(BatchItem.batch_job_id == job_id))).all()
        for sequence, item_id in enumerate(item_ids, start=1):
            session.add(
                MessageBatchRequest(
                    custom_id=f"{item_id.hex}-1",
                    batch_job_id=job_id,
                    batch_item_id=item_id,
                    request_key=f"requests/test/{item_id}_1.json",
                    raw_key=f"raw/test/{item_id}_raw.json",
                    request_bytes=100 * sequence,
                )
            )
    storage = Storage(recovery_settings)
    for item_id in item_ids:
        body = json.dumps(
            {
                "custom_id": f"{item_id.hex}-1",
                "params": {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": "Persona: Someone"}]},
            }
        )
        await storage.put_bytes(storage.conversation_bucket, f"requests/test/{item_id}_1.json", body.encode(), "application/json")

    activities = MessageBatchActivities(
        recovery_sessions, storage, create_claude_client(recovery_settings), recovery_settings,
        load_prices(recovery_settings), client,
    )
    submission = SubmitBatchInput(job_id=job_id, message_batch_id=uuid.uuid4(), max_requests=100, max_bytes=10_000)
    first = await ActivityEnvironment().run(activities.submit_batch, submission)
    assert first.anthropic_batch_id and first.request_count == 2
    # The crash: the batch exists at the API, its id never reached the row.
    async with recovery_sessions.begin() as session:
        await session.execute(
            update(MessageBatch).where(MessageBatch.id == submission.message_batch_id).values(anthropic_batch_id=None)
        )

    retried = await ActivityEnvironment().run(activities.submit_batch, submission)

    assert retried.anthropic_batch_id == first.anthropic_batch_id and retried.request_count == 2
    assert (await recovery_standin.stats())["batches"] == 1, "no second batch was created"
    async with recovery_sessions() as session:
        row = await session.get(MessageBatch, submission.message_batch_id)
    assert row.anthropic_batch_id == first.anthropic_batch_id
