"""Jobs share the workers: task queue priority and fairness on the real dev server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client

from brightrun.claude_client import create_claude_client
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, Tier
from models.tables import BatchItem
from models.workflow_ids import item_workflow_id
from service import batches
from service.job_outcome import job_outcome
from tests.helpers import eventually, launch_and_wait
from worker import build_workers

ONE_COMBINATION: dict[str, Any] = {
    "personas": ["David Chen"],
    "arcs": ["Couple Conflict -> Alignment"],
    "topics": ["Essential Estate Planning"],
    "tier": Tier.TEMPLATE,
}


async def _item_ids(sessions: async_sessionmaker, job_id: uuid.UUID) -> set[str]:
    async with sessions() as session:
        return {str(i) for i in await session.scalars(select(BatchItem.id).where(BatchItem.batch_job_id == job_id))}


@pytest.mark.usefixtures("pipeline_worker")
async def test_the_jobs_priority_and_fairness_key_reach_the_item_and_its_claude_call(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings
) -> None:
    job = await launch_and_wait(sessions, stack_client, stack_settings, **ONE_COMBINATION, priority=2)

    (item_id,) = await _item_ids(sessions, job.job_id)
    history = await stack_client.get_workflow_handle(item_workflow_id(uuid.UUID(item_id))).fetch_history()
    started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    claude_call = next(
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "generate_conversation"
    )
    for priority in (started.workflow_execution_started_event_attributes.priority,
                     claude_call.activity_task_scheduled_event_attributes.priority):  # fmt: skip
        assert (priority.priority_key, priority.fairness_key) == (2, str(job.job_id))


@pytest.fixture
async def slow_claude_settings(
    stack_client: Client, stack_settings: Settings, sessions: async_sessionmaker, storage: Storage
) -> AsyncIterator[Settings]:
    """Workers of their own, whose Claude queue takes 30 calls a minute: a backlog builds up. The
    worker may hold as many calls as the big job has in flight: fairness must not depend on a
    small cap (with calls waiting for turns inside the worker, first come first served, the
    small job's calls waited behind all of them)."""
    settings = stack_settings.model_copy(
        update={
            "task_queue": f"fair-{uuid.uuid4()}",
            "claude_task_queue": f"fair-claude-{uuid.uuid4()}",
            "claude_calls_per_minute": 30.0,
            "claude_max_concurrent_calls": 40,
            # Not the check for items that end unreported: under load it takes a child whose start
            # is still pending for one that ended (the chaos lane found it), failing the item.
            "unreported_check_s": 600,
        }
    )
    async with contextlib.AsyncExitStack() as running:
        for worker in build_workers(stack_client, settings, sessions, storage, create_claude_client(settings)):
            await running.enter_async_context(worker)
        yield settings


async def test_a_small_job_is_not_queued_behind_a_big_jobs_backlog(
    sessions: async_sessionmaker, stack_client: Client, slow_claude_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(latency_ms=500)
    big = await batches.launch(
        sessions, stack_client, slow_claude_settings,
        batches.LaunchRequest(**ONE_COMBINATION, samples=40, concurrency=40),
    )  # fmt: skip
    # A backlog: many of the big job's calls wait in the Claude queue.
    await eventually(
        lambda: _waiting_for_claude(stack_client, sessions, big.job_id, 10), "the big job's backlog", 120
    )
    called_at_launch = (await standin.stats())["requests"]
    small = await batches.launch(
        sessions, stack_client, slow_claude_settings,
        batches.LaunchRequest(**ONE_COMBINATION, samples=4, concurrency=4),
    )  # fmt: skip
    await job_outcome(stack_client.get_workflow_handle(small.workflow_id))
    await job_outcome(stack_client.get_workflow_handle(big.workflow_id))

    async with sessions() as session:
        errors = set(await session.scalars(
            select(BatchItem.error_message).where(BatchItem.batch_job_id.in_([big.job_id, small.job_id]))
        ))  # fmt: skip
    assert errors == {None}
    big_items, small_items = await _item_ids(sessions, big.job_id), await _item_ids(sessions, small.job_id)
    scheduled = await _claude_scheduled_at(stack_client, big_items | small_items)
    called: dict[str, float] = {}
    for entry in (await standin.stats())["log"]:
        called.setdefault(entry["item"], entry["at"])  # its first call
    # Shared fairly, each of the small job's calls overtakes big-job calls that were waiting when
    # it was scheduled.
    overtaken = [
        sum(scheduled[b] < scheduled[s] and called[b] > called[s] for b in big_items) for s in small_items
    ]
    print(f"small job launched after {called_at_launch} calls; big job's calls each of the small job's overtook: {overtaken}")
    assert sum(overtaken) >= 10


async def _claude_scheduled_at(client: Client, item_ids: set[str]) -> dict[str, float]:
    """When each item's Claude call was put in the queue (its first attempt)."""
    scheduled = {}
    for item_id in item_ids:
        history = await client.get_workflow_handle(item_workflow_id(uuid.UUID(item_id))).fetch_history()
        event = next(
            (
                e
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and e.activity_task_scheduled_event_attributes.activity_type.name == "generate_conversation"
            ),
            None,
        )
        assert event is not None, f"item {item_id}: no Claude call in {[e.event_type for e in history.events]}"
        scheduled[item_id] = event.event_time.ToDatetime().timestamp()
    return scheduled


async def _waiting_for_claude(client: Client, sessions: async_sessionmaker, job_id: uuid.UUID, at_least: int) -> bool:
    """At least this many of the job's items have their Claude call scheduled and not yet started."""
    async with sessions() as session:
        started = await session.scalars(
            select(BatchItem.id).where(BatchItem.batch_job_id == job_id, BatchItem.status == ItemStatus.PROCESSING.value)
        )
    waiting = 0
    for item_id in started:
        described = await client.get_workflow_handle(item_workflow_id(item_id)).describe()
        waiting += any(
            a.activity_type.name == "generate_conversation" and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
            for a in described.raw_description.pending_activities
        )
    return waiting >= at_least
