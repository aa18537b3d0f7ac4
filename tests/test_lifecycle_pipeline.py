"""Steering jobs on the real stack: pause, resume, cancel, retry, the job log and the search
attributes, as `starter.py` does it (through service.batches)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from brightrun.settings import Settings
from brightrun.storage import Storage, job_log_key
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, JobStatus, Tier
from models.tables import BatchItem, BatchJobEvent, Conversation
from service import batches
from service.job_outcome import job_outcome
from tests.helpers import eventually, launch_and_wait
from tests.test_starter import starter

pytestmark = pytest.mark.usefixtures("pipeline_worker")


def batch_of(personas: list[str], concurrency: int) -> batches.LaunchRequest:
    return batches.LaunchRequest(
        personas=personas,
        arcs=["Couple Conflict -> Alignment", "Anxiety -> Confidence"],
        topics=["Essential Estate Planning"],
        tier=Tier.TEMPLATE,
        concurrency=concurrency,
    )


async def events_of(sessions: async_sessionmaker, job_id: uuid.UUID) -> list[tuple[datetime, str]]:
    async with sessions() as session:
        rows = await session.execute(
            select(BatchJobEvent.created_at, BatchJobEvent.line)
            .where(BatchJobEvent.batch_job_id == job_id)
            .order_by(BatchJobEvent.id)
        )
        return [tuple(row) for row in rows]


async def item_statuses(sessions: async_sessionmaker, job_id: uuid.UUID) -> list[str]:
    async with sessions() as session:
        return list(
            (await session.scalars(select(BatchItem.status).where(BatchItem.batch_job_id == job_id).order_by(BatchItem.position))).all()
        )


async def test_pause_sends_no_claude_request_until_resume(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(latency_ms=800)
    job = await batches.launch(sessions, stack_client, stack_settings, batch_of(["David Chen", "Maria Gonzalez", "Priya Patel"], 2))
    await eventually(lambda: _requests_at_least(standin, 2), "two Claude calls are under way")

    with pytest.raises(batches.BatchInputError, match=r"cannot resume job .*: it is processing"):
        await batches.control_job(sessions, stack_client, str(job.job_id), "resume")
    paused = await batches.control_job(sessions, stack_client, str(job.job_id), "pause")
    assert paused.status == JobStatus.PAUSED
    with pytest.raises(batches.BatchInputError, match=r"cannot pause job .*: it is paused"):
        await batches.control_job(sessions, stack_client, str(job.job_id), "pause")
    await eventually(lambda: _in_flight_is_zero(sessions, stack_client, job.job_id), "the in-flight items finished")
    resumed = await batches.control_job(sessions, stack_client, str(job.job_id), "resume")
    assert resumed.status == JobStatus.PROCESSING
    await job_outcome(stack_client.get_workflow_handle(job.workflow_id))

    events = await events_of(sessions, job.job_id)
    paused_at = next(at for at, line in events if line == "job paused")
    resumed_at = next(at for at, line in events if line == "job processing" and at > paused_at)
    started_while_paused = [line for at, line in events if paused_at < at < resumed_at and line.endswith("started")]
    requests_while_paused = [
        r for r in (await standin.stats())["log"] if paused_at.timestamp() < r["at"] < resumed_at.timestamp()
    ]
    assert started_while_paused == [] and requests_while_paused == []
    final = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (final.status, final.successful, final.total) == ("completed", 6, 6)


async def _requests_at_least(standin: StandinControl, count: int) -> bool:
    return (await standin.stats())["requests"] >= count


async def _in_flight_is_zero(sessions: async_sessionmaker, client: Client, job_id: uuid.UUID) -> bool:
    return (await batches.job_status(sessions, str(job_id), client)).in_flight == 0


async def test_cancel_marks_every_unstarted_item_and_the_search_attribute(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(latency_ms=3000)
    job = await batches.launch(
        sessions, stack_client, stack_settings, batch_of(["David Chen", "Maria Gonzalez", "Priya Patel", "James Okafor"], 2)
    )
    await eventually(lambda: _requests_at_least(standin, 2), "two Claude calls are under way")

    cancelled = await batches.control_job(sessions, stack_client, str(job.job_id), "cancel")

    assert cancelled.status == JobStatus.CANCELLED
    statuses = await item_statuses(sessions, job.job_id)
    assert set(statuses) <= {ItemStatus.COMPLETED, ItemStatus.CANCELLED}
    assert statuses.count(ItemStatus.CANCELLED) >= 6, "every item that had not started is cancelled"
    assert cancelled.completed + cancelled.cancelled == cancelled.total == 8
    query = f'BatchJobId = "{job.job_id}" AND BatchStatus = "cancelled"'
    await eventually(lambda: _listed(stack_client, query), "the list API finds the job by BatchStatus")


async def _listed(client: Client, query: str) -> bool:
    return [w.id async for w in client.list_workflows(query)] != []


async def test_retry_reruns_exactly_the_failed_items_and_the_log_tells_the_story(
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    storage: Storage,
    standin: StandinControl,
) -> None:
    await standin.configure(script=["400"])
    job = await launch_and_wait(sessions, stack_client, stack_settings, **vars(batch_of(["James Okafor"], 1)))
    first = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (first.status, first.successful, first.failed) == ("completed", 1, 1)

    retried = await batches.retry_job(sessions, stack_client, stack_settings, str(job.job_id))
    assert retried.status in (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.COMPLETED)
    await job_outcome(stack_client.get_workflow_handle(job.workflow_id))

    final = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (final.status, final.successful, final.failed, final.completed) == ("completed", 2, 0, 2)
    assert (await standin.stats())["requests"] == 3, "the item that succeeded was not generated again"
    async with sessions() as session:
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.batch_job_id == job.job_id)
        )
    assert conversations == 2
    log = (await storage.get_bytes(storage.log_bucket, job_log_key(job.job_id))).decode()
    assert "failed: Claude API 400" in log
    assert "job retry: 1 failed items queued again" in log
    assert log.count("succeeded: conversation") == 2
    assert log.rstrip().endswith("job completed")

    again = batches.retry_job(sessions, stack_client, stack_settings, str(job.job_id))
    with pytest.raises(batches.BatchInputError, match="has no failed items to retry"):
        await again


async def test_control_commands_refuse_what_the_state_does_not_allow(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    job = await launch_and_wait(sessions, stack_client, stack_settings, **vars(batch_of(["Priya Patel"], 2)))

    for action in ("pause", "resume", "cancel"):
        with pytest.raises(batches.BatchInputError, match=f"cannot {action} job .*: it is completed"):
            await batches.control_job(sessions, stack_client, str(job.job_id), action)
    status = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert status.status == "completed"


@pytest.mark.parametrize("ending", ["failed", "cancelled"])
async def test_retry_of_a_job_whose_workflow_ended_failed_or_canceled_runs_it_again(
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    cli_env: dict[str, str],
    standin: StandinControl,
    ending: str,
) -> None:
    """The job's workflow ends Failed or Canceled; `starter.py retry` starts a new run under the
    same workflow id (the default id reuse policy), which re-runs the failed item and completes."""
    if ending == "failed":
        await standin.configure(script=["400", "400"])  # both items refused: the job fails
        job = await launch_and_wait(sessions, stack_client, stack_settings, **vars(batch_of(["James Okafor"], 1)))
    else:
        await standin.configure(script=["400"], latency_ms=20_000)  # the refusal after 5 s, a reply after 20
        job = await batches.launch(sessions, stack_client, stack_settings, batch_of(["James Okafor"], 1))
        await eventually(lambda: _item_failed(sessions, job.job_id), "the first item failed")
        await batches.control_job(sessions, stack_client, str(job.job_id), "cancel")  # the second one in flight
    handle = stack_client.get_workflow_handle(job.workflow_id)
    await eventually(lambda: _closed(handle), "the job's workflow ended")
    first = await handle.describe()
    ended = await batches.job_status(sessions, str(job.job_id), stack_client)
    if ending == "failed":
        assert (first.status, ended.status, ended.failed) == (WorkflowExecutionStatus.FAILED, JobStatus.FAILED, 2)
    else:
        assert (first.status, ended.status, ended.failed, ended.cancelled) == (
            WorkflowExecutionStatus.CANCELED, JobStatus.CANCELLED, 1, 1,
        )
    await standin.reset()

    retried = await asyncio.to_thread(starter, cli_env, "retry", str(job.job_id), "--json")

    assert retried.returncode == 0 and retried.stderr == "", retried.stderr
    progress = await job_outcome(handle)
    second = await handle.describe()
    assert second.run_id != first.run_id and second.status == WorkflowExecutionStatus.COMPLETED
    final = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (final.status, final.failed, progress.status) == (JobStatus.COMPLETED, 0, JobStatus.COMPLETED)
    assert final.successful == (2 if ending == "failed" else 1)


async def _item_failed(sessions: async_sessionmaker, job_id: uuid.UUID) -> bool:
    return ItemStatus.FAILED in await item_statuses(sessions, job_id)


async def _closed(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).close_time is not None
