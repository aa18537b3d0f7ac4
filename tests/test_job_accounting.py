"""Exactly-once accounting of a job's items on the time-skipping server: an item workflow that
exists already, one that is terminated (watched by this run, or carried over continue-as-new),
job steps that fail for good, cancellations from the API during the start and the halt, a
cancel racing an item's start, a pause sent before the job started, and one plan per job."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from models.enums import ItemStatus, JobStatus
from models.messages import BatchItemInput, JobProgress
from models.workflow_ids import item_workflow_id, job_workflow_id
from service.job_outcome import job_outcome
from tests.fakes import FakeBatch
from tests.helpers import eventually
from tests.test_job_lifecycle import gated, progress, start, status_is, worker_for
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow

# Longer than any wait below, far shorter than a hang.
RESULT_TIMEOUT_S = 60


async def result_of(handle: WorkflowHandle) -> JobProgress:
    """The job's progress, whether its execution completed, failed or was cancelled."""
    return await asyncio.wait_for(job_outcome(handle), RESULT_TIMEOUT_S)


def assert_counters_equal_rows(result: JobProgress, batch: FakeBatch) -> None:
    rows = batch.counters()
    assert (result.completed, result.successful, result.failed, result.cancelled) == (
        rows.completed, rows.successful, rows.failed, rows.cancelled,
    )
    assert result.remaining == batch.count(ItemStatus.QUEUED) + batch.count(ItemStatus.PROCESSING) == 0


async def test_an_item_whose_workflow_exists_already_is_awaited_not_fatal(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3)
    elsewhere = f"{task_queue}-elsewhere"
    first = batch.items[0]
    # The item's workflow was started before (by an earlier run of the job) and waits for a worker.
    await ts_client.start_workflow(
        BatchItemWorkflow.run,
        BatchItemInput(
            job_id=batch.job_id, item_id=first.item_id, user_id="test-user", parent_workflow_id=job_workflow_id(batch.job_id)
        ),
        id=item_workflow_id(first.item_id),
        task_queue=elsewhere,
    )
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: _completed(handle, 2), "the two other items completed")
        waiting = await progress(handle)
        assert (waiting.status, waiting.in_flight, waiting.completed) == (JobStatus.PROCESSING, 1, 2)
        async with worker_for(ts_client, elsewhere, batch):  # the existing item workflow runs and reports
            result = await result_of(handle)

    assert (result.status, result.successful) == (JobStatus.COMPLETED, 3)
    assert [i.finish_calls for i in batch.items] == [1, 1, 1] and batch.generate_calls == 3
    assert_counters_equal_rows(result, batch)


async def _completed(handle: WorkflowHandle, count: int) -> bool:
    return (await progress(handle)).completed == count


async def test_a_terminated_item_workflow_is_accounted_failed_from_its_row(ts_client: Client, task_queue: str) -> None:
    batch = gated(3, concurrency=3)
    terminated = batch.items[1]
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch, unreported_check_s=1)
        await eventually(lambda: batch.generate_calls == 3, "three Claude calls are under way")
        await ts_client.get_workflow_handle(item_workflow_id(terminated.item_id)).terminate("operator")
        assert batch.claude_gate is not None
        batch.claude_gate.set()
        result = await result_of(handle)

    assert (result.status, result.successful, result.failed) == (JobStatus.COMPLETED, 2, 1)
    assert terminated.status == ItemStatus.FAILED
    assert terminated.error_message == "its workflow ended (terminated) before it reported an outcome"
    assert_counters_equal_rows(result, batch)


async def test_an_item_terminated_after_continue_as_new_is_accounted_by_the_next_run(
    ts_client: Client, task_queue: str
) -> None:
    batch = gated(6, concurrency=3)
    terminated = batch.items[0]
    async with worker_for(ts_client, task_queue, batch):
        # The first run continues as new as soon as its three items are started.
        handle = await start(ts_client, task_queue, batch, history_event_limit=20)
        await eventually(lambda: batch.generate_calls == 3, "three Claude calls are under way")
        await eventually(lambda: _continued_as_new(handle), "a later run carries the three items")
        await ts_client.get_workflow_handle(item_workflow_id(terminated.item_id)).terminate("operator")
        assert batch.claude_gate is not None
        batch.claude_gate.set()
        result = await result_of(handle)

    assert result.runs >= 2
    assert (result.status, result.successful, result.failed) == (JobStatus.COMPLETED, 5, 1)
    assert terminated.error_message is not None
    assert terminated.status == ItemStatus.FAILED and "terminated" in terminated.error_message
    assert_counters_equal_rows(result, batch)


async def _continued_as_new(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).run_id != handle.first_execution_run_id


async def test_job_steps_that_fail_for_good_never_fail_the_job_workflow(ts_client: Client, task_queue: str) -> None:
    batch = gated(4, concurrency=2, failing_status_writes=True)
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.generate_calls == 2, "two items are in flight")
        await handle.signal(BatchJobWorkflow.pause)  # its status write fails inside the handler
        await eventually(lambda: status_is(handle, JobStatus.PAUSED), "the job shows paused")
        await handle.signal(BatchJobWorkflow.resume)
        assert batch.claude_gate is not None
        batch.claude_gate.set()
        result = await result_of(handle)

    assert (result.status, result.successful) == (JobStatus.COMPLETED, 4)
    assert_counters_equal_rows(result, batch)


async def test_a_cancellation_during_start_job_ends_the_job_cancelled(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3, start_gate=asyncio.Event())
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: _activity_pending(handle, "start_job"), "start_job is under way")

        await handle.cancel()  # what the web UI's Cancel does
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
        final = await progress(handle)
        assert isinstance(failure.value.cause, CancelledError)
        assert (final.status, final.cancelled) == (JobStatus.CANCELLED, 3)
        assert batch.job_status == JobStatus.CANCELLED and batch.job_error == "cancelled by request"
        assert batch.count(ItemStatus.CANCELLED) == 3 and batch.log_writes == 1
        assert batch.start_gate is not None
        batch.start_gate.set()

    assert batch.generate_calls == 0


async def _activity_pending(handle: WorkflowHandle, activity_type: str) -> bool:
    pending = (await handle.describe()).raw_description.pending_activities
    return activity_type in [a.activity_type.name for a in pending]


async def test_a_cancellation_during_the_halt_still_ends_the_job_cancelled_with_its_log(
    ts_client: Client, task_queue: str
) -> None:
    batch = gated(4, concurrency=2, finish_gate=asyncio.Event())
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.generate_calls == 2, "two items are in flight")
        await handle.signal(BatchJobWorkflow.cancel)
        # The halt marked the unstarted items and waits for the in-flight ones, whose reports hang.
        await eventually(lambda: batch.count(ItemStatus.CANCELLED) == 2, "the halt marked the unstarted items")

        await handle.cancel()
        assert batch.finish_gate is not None
        batch.finish_gate.set()
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
        assert batch.claude_gate is not None
        batch.claude_gate.set()

    assert isinstance(failure.value.cause, CancelledError)
    assert batch.job_status == JobStatus.CANCELLED and batch.log_writes >= 1
    assert batch.count(ItemStatus.CANCELLED) == 4


async def test_a_cancel_while_an_item_records_its_conversation_leaves_it_completed_and_counted_once(
    ts_client: Client, task_queue: str
) -> None:
    # The item's last step stored and linked its conversation and waits to record the item.
    batch = FakeBatch.of(1, finish_gate=asyncio.Event())
    item = batch.items[0]
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.generate_calls == 1, "the item's call was made")
        item_handle = ts_client.get_workflow_handle(item_workflow_id(item.item_id))
        await eventually(lambda: batch.finish_entered == 1, "the item records its conversation")
        await handle.signal(BatchJobWorkflow.cancel)
        await eventually(lambda: _cancel_requested(item_handle), "the job cancelled the item")
        assert batch.finish_gate is not None
        batch.finish_gate.set()
        result = await result_of(handle)

    # The step ran to its end: the item is recorded once, completed, not cancelled beside its
    # linked conversation.
    assert item.status == ItemStatus.COMPLETED and item.finish_calls == 1
    assert (result.successful, result.cancelled) == (1, 0)
    assert_counters_equal_rows(result, batch)


async def _cancel_requested(handle: WorkflowHandle) -> bool:
    history = await handle.fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED for e in history.events)


async def test_a_cancel_racing_an_items_start_counts_the_item_once(ts_client: Client, task_queue: str) -> None:
    # The children started, but neither has marked its row yet: both rows are still queued.
    batch = FakeBatch.of(6, concurrency=2, begin_gate=asyncio.Event())
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.begin_calls == 2, "two items are starting")
        await handle.signal(BatchJobWorkflow.cancel)
        result = await result_of(handle)
        assert batch.begin_gate is not None
        batch.begin_gate.set()

    assert (result.status, result.cancelled, result.remaining, result.in_flight) == (JobStatus.CANCELLED, 6, 0, 0)
    assert_counters_equal_rows(result, batch)
    assert batch.generate_calls == 0


async def test_a_pause_sent_while_the_job_is_queued_is_applied_when_it_starts(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3)
    handle = await start(ts_client, task_queue, batch)  # no worker yet: the job is queued
    await handle.signal(BatchJobWorkflow.pause)

    async with worker_for(ts_client, task_queue, batch):
        await eventually(lambda: status_is(handle, JobStatus.PAUSED), "the job shows paused")
        assert batch.job_status == JobStatus.PAUSED and batch.generate_calls == 0
        await handle.signal(BatchJobWorkflow.resume)
        result = await result_of(handle)

    assert (result.status, result.successful) == (JobStatus.COMPLETED, 3)
    assert batch.status_changes == [JobStatus.PAUSED, JobStatus.PROCESSING, JobStatus.COMPLETED]


async def test_the_job_is_planned_once_however_many_runs_it_takes(ts_client: Client, task_queue: str) -> None:
    # start_job checks the catalog against every queued item: once per job, not once per run.
    batch = FakeBatch.of(20, concurrency=4, claude_delay_s=0.2)
    async with worker_for(ts_client, task_queue, batch):
        result = await result_of(await start(ts_client, task_queue, batch, page_size=5, history_event_limit=60))

    assert result.runs >= 3 and (result.status, result.successful) == (JobStatus.COMPLETED, 20)
    assert batch.start_calls == 1
