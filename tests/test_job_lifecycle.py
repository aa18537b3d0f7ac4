"""The job's state machine on the time-skipping server: pause, resume, cancel (signal and the
client's cancellation API), the stop policy, retry, continue-as-new and worker restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from models.enums import ErrorPolicy, ItemStatus, JobStatus
from models.messages import BatchJobInput, BatchProgressState, ItemFinished, JobProgress
from models.workflow_ids import job_workflow_id
from service.job_outcome import job_outcome
from tests.fakes import FakeActivities, FakeBatch
from tests.helpers import eventually
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.config import CONTINUE_WITHOUT_WAITING_FOR_ENRICHMENT, JOB_FAILED


@asynccontextmanager
async def worker_for(client: Client, task_queue: str, batch: FakeBatch, **options: Any) -> AsyncIterator[None]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow],
        activities=FakeActivities(batch, client).all(),
        **options,
    ):
        yield


async def start(client: Client, task_queue: str, batch: FakeBatch, **knobs: Any) -> WorkflowHandle:
    return await client.start_workflow(
        BatchJobWorkflow.run, BatchJobInput(job_id=batch.job_id, **knobs), id=job_workflow_id(batch.job_id), task_queue=task_queue
    )


async def progress(handle: WorkflowHandle) -> JobProgress:
    return await handle.query(BatchJobWorkflow.progress)


async def ends_canceled(handle: WorkflowHandle) -> JobProgress:
    """The execution ends Canceled (not Completed); the job's progress, from the closed run."""
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError), failure.value.cause
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    return await job_outcome(handle)


async def ends_failed(handle: WorkflowHandle, reason: str) -> JobProgress:
    """The execution ends Failed, with the job's reason as its message, a non-retryable
    ApplicationError of type JOB_FAILED carrying the job's progress."""
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == JOB_FAILED and cause.non_retryable, cause
    assert reason in cause.message
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    return await job_outcome(handle)


async def status_is(handle: WorkflowHandle, status: JobStatus) -> bool:
    return (await progress(handle)).status == status


def gated(size: int, **knobs: Any) -> FakeBatch:
    return FakeBatch.of(size, claude_gate=asyncio.Event(), **knobs)


async def test_pause_lets_in_flight_items_finish_and_starts_nothing_until_resume(ts_client: Client, task_queue: str) -> None:
    batch = gated(8, concurrency=2)
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.generate_calls == 2, "two items are in flight")

        await handle.signal(BatchJobWorkflow.pause)
        await eventually(lambda: status_is(handle, JobStatus.PAUSED), "the job shows paused")
        assert batch.claude_gate is not None
        batch.claude_gate.set()
        await eventually(lambda: _completed_at_least(handle, 2), "the in-flight items finish")
        paused = await progress(handle)

        assert (paused.status, paused.in_flight, paused.completed, paused.remaining) == (JobStatus.PAUSED, 0, 2, 6)
        assert batch.generate_calls == 2, "nothing new started while paused"
        assert batch.job_status == JobStatus.PAUSED, "the row mirrors the pause"
        assert batch.log_writes >= 1, "the log is written when the job pauses"

        await handle.signal(BatchJobWorkflow.resume)
        result = await handle.result()

    assert result.status == JobStatus.COMPLETED and result.successful == 8
    assert batch.status_changes == [JobStatus.PAUSED, JobStatus.PROCESSING, JobStatus.COMPLETED]


async def test_cancel_while_paused_marks_every_unstarted_item_cancelled(ts_client: Client, task_queue: str) -> None:
    batch = gated(6, concurrency=2)
    assert batch.claude_gate is not None
    batch.claude_gate.set()
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.count(ItemStatus.COMPLETED) >= 1, "an item completed")
        await handle.signal(BatchJobWorkflow.pause)
        await eventually(lambda: status_is(handle, JobStatus.PAUSED), "the job shows paused")
        # (In-flight items being cancelled is the next test's subject; here only paused ones.)
        await eventually(lambda: _nothing_in_flight(handle), "the in-flight items finished")

        await handle.signal(BatchJobWorkflow.cancel)
        result = await ends_canceled(handle)

    assert result.status == JobStatus.CANCELLED and batch.job_status == JobStatus.CANCELLED
    assert result.completed + result.cancelled == 6 and result.cancelled == batch.count(ItemStatus.CANCELLED) > 0
    assert batch.count(ItemStatus.QUEUED) == batch.count(ItemStatus.PROCESSING) == 0
    # A cancelled job still enriches what succeeded, before it shows cancelled.
    assert batch.enriched_when_final == len(batch.enriched) == batch.count(ItemStatus.COMPLETED) > 0


@pytest.mark.parametrize("how", ["signal", "cancellation API"])
async def test_cancel_ends_in_flight_items_promptly_and_the_job_cancelled(
    ts_client: Client, task_queue: str, how: str
) -> None:
    batch = gated(10, concurrency=3)
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.generate_calls == 3, "three Claude calls are under way")

        if how == "signal":
            await handle.signal(BatchJobWorkflow.cancel)
        else:
            await handle.cancel()
        # Either way the execution ends Canceled (the web UI's badge), the job cancelled.
        result = await ends_canceled(handle)
        # The Claude calls are still blocked: the items did not wait for them.
        assert batch.claude_gate is not None
        assert not batch.claude_gate.is_set()
        batch.claude_gate.set()

    assert result.status == JobStatus.CANCELLED and batch.job_status == JobStatus.CANCELLED
    assert (result.cancelled, result.completed, result.in_flight) == (10, 0, 0)
    assert batch.count(ItemStatus.CANCELLED) == 10
    assert batch.generate_calls == 3


async def test_the_stop_policy_fails_the_job_at_the_first_failed_item(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(5, concurrency=1, error_policy=ErrorPolicy.STOP, failing_positions={1: "Claude API 400: bad"})
    async with worker_for(ts_client, task_queue, batch):
        result = await ends_failed(await start(ts_client, task_queue, batch), "stopped at the first failed item")

    assert result.status == JobStatus.FAILED and batch.job_status == JobStatus.FAILED
    assert batch.job_error is not None
    assert "Claude API 400: bad" in batch.job_error
    assert [i.status for i in batch.items] == [ItemStatus.COMPLETED, ItemStatus.FAILED] + [ItemStatus.CANCELLED] * 3
    assert (result.successful, result.failed, result.cancelled) == (1, 1, 3)


async def test_a_job_that_cannot_run_fails_with_the_reason(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3, catalog_intact=False)
    async with worker_for(ts_client, task_queue, batch):
        result = await ends_failed(await start(ts_client, task_queue, batch), "was deleted from the catalog")

    assert result.status == JobStatus.FAILED
    assert batch.job_error is not None
    assert "was deleted from the catalog" in batch.job_error
    assert batch.count(ItemStatus.CANCELLED) == 3 and batch.generate_calls == 0


async def test_a_retry_run_runs_only_the_requeued_items_and_keeps_the_counters(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(5)
    for item in batch.items[:3]:
        item.status = ItemStatus.COMPLETED
    batch.enriched = {item.item_id for item in batch.items[:3]}  # by the first run
    batch.job_status = JobStatus.QUEUED  # what `starter.py retry` leaves: two failed items queued again

    async with worker_for(ts_client, task_queue, batch):
        result = await (await start(ts_client, task_queue, batch)).result()

    assert batch.generate_calls == 2
    assert batch.enriched == {item.item_id for item in batch.items}, "the retry enriches what it re-ran"
    assert (result.status, result.successful, result.completed, result.remaining) == (JobStatus.COMPLETED, 5, 5, 0)


async def test_pause_survives_continue_as_new_and_a_worker_restart(stack_client: Client, task_queue: str) -> None:
    # The real dev server: a worker that stops hands its sticky tasks back to it, as in
    # production (the time-skipping server kept them on the stopped worker's queue).
    batch = gated(12, concurrency=4)
    async with worker_for(stack_client, task_queue, batch):
        # About 47 events once paused; the four reports add at least 8 (signals, a workflow task).
        handle = await start(stack_client, task_queue, batch, history_event_limit=50)
        await eventually(lambda: batch.generate_calls == 4, "four items are in flight")
        await handle.signal(BatchJobWorkflow.pause)
        await eventually(lambda: status_is(handle, JobStatus.PAUSED), "the job shows paused")
        assert batch.claude_gate is not None
        batch.claude_gate.set()
        # The four reports push the history past the limit: the job continues as new while paused.
        await eventually(lambda: _continued_as_new(handle), "a second run started")

    async with worker_for(stack_client, task_queue, batch):  # a new worker: it replays the job's run
        # The fourth report may still be on its way when the first worker stops.
        await eventually(lambda: _nothing_in_flight(handle), "every in-flight item reported")
        after_restart = await progress(handle)
        assert (after_restart.status, after_restart.completed, after_restart.in_flight) == (JobStatus.PAUSED, 4, 0)
        assert batch.generate_calls == 4
        await handle.signal(BatchJobWorkflow.resume)
        result = await handle.result()

    assert result.status == JobStatus.COMPLETED and result.successful == 12 and result.runs >= 2


async def test_a_run_continues_as_new_without_waiting_for_an_enrichment_page(own_ts_client: Client, task_queue: str) -> None:
    # A page per success, each taking a while, and reports that keep coming: a run that waited
    # for the page under way would record them past its margin. A server of its own: on the
    # shared one, after the rest of the suite, its result never came (in CI; never when run alone).
    ts_client = own_ts_client
    batch = FakeBatch.of(24, concurrency=8, enrich_delay_s=0.5)
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch, history_event_limit=120, enrich_every=1)
        result = await handle.result()

    first_run = await ts_client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id).fetch_history()
    events = first_run.events
    decided = next(i for i, e in enumerate(events) if CONTINUE_WITHOUT_WAITING_FOR_ENRICHMENT.encode() in e.SerializeToString())
    after = [EventType.Name(e.event_type) for e in events[decided:]]
    assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in after and "EVENT_TYPE_ACTIVITY_TASK_COMPLETED" not in after
    assert after[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    assert (result.status, result.successful) == (JobStatus.COMPLETED, 24) and result.runs >= 2
    assert batch.enriched == {item.item_id for item in batch.items}, "the next runs enrich the rest"


async def _continued_as_new(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).run_id != handle.first_execution_run_id


async def test_the_progress_query_reports_counts_eta_and_usage(ts_client: Client, task_queue: str) -> None:
    batch = gated(6, concurrency=2)
    async with worker_for(ts_client, task_queue, batch):
        handle = await start(ts_client, task_queue, batch)
        await eventually(lambda: batch.generate_calls == 2, "two items are in flight")
        before = await progress(handle)
        assert (before.total, before.in_flight, before.completed, before.remaining) == (6, 2, 0, 6)
        assert before.eta_seconds is None, "no ETA before an item has been measured"

        assert batch.claude_gate is not None
        batch.claude_gate.set()
        await eventually(lambda: _completed_at_least(handle, 2), "two items completed")
        during = await progress(handle)
        result = await handle.result()

    assert during.eta_seconds is not None and during.eta_seconds >= 0
    assert during.usage.input_tokens == 100 * during.successful
    assert result.eta_seconds == 0.0 and result.remaining == 0
    assert result.usage.output_tokens == 6 * 50


async def _nothing_in_flight(handle: WorkflowHandle) -> bool:
    return (await progress(handle)).in_flight == 0


async def _completed_at_least(handle: WorkflowHandle, count: int) -> bool:
    return (await progress(handle)).completed >= count



async def test_a_report_delivered_with_the_first_task_of_a_continued_run_is_counted(
    ts_client: Client, task_queue: str
) -> None:
    batch = FakeBatch.of(3)
    reported = batch.items[0]
    reported.status = ItemStatus.COMPLETED
    state = BatchProgressState(total_items=3, next_position=1, in_flight=[reported.item_id], plan=batch.plan())
    # No worker yet: the report waits in the run's first workflow task, before `run` starts.
    handle = await start(ts_client, task_queue, batch, state=state)
    await handle.signal(BatchJobWorkflow.item_finished, ItemFinished(item_id=reported.item_id, status=ItemStatus.COMPLETED))

    async with worker_for(ts_client, task_queue, batch):
        result = await handle.result()

    assert (result.status, result.successful, result.in_flight, result.remaining) == (JobStatus.COMPLETED, 3, 0, 0)


async def test_a_cancel_delivered_before_the_job_starts_is_kept(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3)
    handle = await start(ts_client, task_queue, batch)
    await handle.signal(BatchJobWorkflow.cancel)

    async with worker_for(ts_client, task_queue, batch):
        result = await ends_canceled(handle)

    assert (result.status, result.cancelled) == (JobStatus.CANCELLED, 3)
    assert batch.generate_calls == 0


@pytest.mark.parametrize("ending", ["failed", "cancelled by signal", "cancelled by request"])
async def test_a_failed_or_cancelled_job_ends_its_execution_so_and_a_retry_runs_under_the_same_id(
    ts_client: Client, task_queue: str, ending: str
) -> None:
    """What `starter.py retry` does after a job's workflow ended Failed or Canceled: the failed
    items queued again (service/batches.py), a new run under the same workflow id."""
    if ending == "failed":
        batch = FakeBatch.of(3, failing_positions=dict.fromkeys(range(3), "Claude API 400: prompt is too long"))
        async with worker_for(ts_client, task_queue, batch):
            first = await ends_failed(await start(ts_client, task_queue, batch), "all 3 items failed")
        assert (first.status, first.failed) == (JobStatus.FAILED, 3)
    else:
        batch = FakeBatch.of(4, concurrency=1, failing_positions={0: "Claude API 400: prompt is too long"})
        async with worker_for(ts_client, task_queue, batch):
            handle = await start(ts_client, task_queue, batch)
            await eventually(lambda: batch.count(ItemStatus.FAILED) == 1, "the first item failed")
            await handle.signal(BatchJobWorkflow.pause)
            await eventually(lambda: status_is(handle, JobStatus.PAUSED), "the job shows paused")
            await eventually(lambda: _nothing_in_flight(handle), "the in-flight items finished")
            if ending == "cancelled by signal":
                await handle.signal(BatchJobWorkflow.cancel)
            else:
                await handle.cancel()
            first = await ends_canceled(handle)
        assert (first.status, first.failed) == (JobStatus.CANCELLED, 1) and first.cancelled > 0
    assert batch.job_status == first.status

    # `retry`: the failed items queued again, the job queued, a new run of its workflow.
    batch.failing_positions.clear()
    for item in batch.items:
        if item.status == ItemStatus.FAILED:
            item.status, item.error_message = ItemStatus.QUEUED, None
    batch.job_status = JobStatus.QUEUED
    async with worker_for(ts_client, task_queue, batch):
        retried = await start(ts_client, task_queue, batch)
        result = await job_outcome(retried)

    assert (await retried.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert result.status == JobStatus.COMPLETED and batch.job_status == JobStatus.COMPLETED
    assert result.failed == 0 and result.successful == batch.count(ItemStatus.COMPLETED) > 0
