"""Batch mode's workflows on the time-skipping server, with in-memory activities and a fake
Message Batches API: how the Message Batches workflow polls, what each kind of result does to
its item, pause and cancel."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.errors import ANTHROPIC_INVALID_REQUEST, BATCH_REQUEST_ATTEMPTS_EXHAUSTED, MESSAGE_BATCHES_ENDED
from models.enums import DeliveryMode, ItemStatus, JobStatus
from models.messages import BatchJobInput, ClaudeCallPlan, JobProgress, MessageBatchesProgress, MessageBatchPlan
from models.workflow_ids import job_workflow_id, message_batches_workflow_id
from service.job_outcome import job_outcome
from tests.fakes import EXPIRED, FakeActivities, FakeBatch, FakeMessageBatchActivities, FakeMessageBatchApi, errored
from tests.helpers import eventually, run_lengths
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.message_batches import MessageBatchesWorkflow

# Long enough that timers fire only when the server skips time (while a test awaits a result, or
# sleeps on the environment): the time-skipping server fails every later workflow task of a
# workflow whose timer fires in real time during a task ("invalid history builder state for action").
PLAN = MessageBatchPlan(gather_s=30, poll_initial_s=60, poll_max_s=120)
PROBLEM = "the reply is not valid JSON: Expecting value: line 1 column 1 (char 0)"


def batch_mode(size: int, **knobs: Any) -> FakeBatch:
    return FakeBatch.of(size, mode=DeliveryMode.BATCH, **knobs)


@asynccontextmanager
async def worker_for(client: Client, task_queue: str, batch: FakeBatch, api: FakeMessageBatchApi) -> AsyncIterator[None]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow, MessageBatchesWorkflow],
        activities=FakeActivities(batch, client).all() + FakeMessageBatchActivities(batch, api, client).all(),
    ):
        yield


async def start(client: Client, task_queue: str, batch: FakeBatch, plan: MessageBatchPlan = PLAN, **knobs: Any) -> WorkflowHandle:
    return await client.start_workflow(
        BatchJobWorkflow.run,
        BatchJobInput(job_id=batch.job_id, message_batches=plan, **knobs),
        id=job_workflow_id(batch.job_id),
        task_queue=task_queue,
    )


async def run_job(client: Client, task_queue: str, batch: FakeBatch, api: FakeMessageBatchApi, **knobs: Any) -> JobProgress:
    async with worker_for(client, task_queue, batch, api):
        return await job_outcome(await start(client, task_queue, batch, **knobs))


def message_batches_of(client: Client, batch: FakeBatch) -> WorkflowHandle:
    return client.get_workflow_handle_for(MessageBatchesWorkflow.run, message_batches_workflow_id(batch.job_id))


async def message_batches_result(client: Client, batch: FakeBatch) -> MessageBatchesProgress:
    """What the job's Message Batches workflow ends with (awaited on a handle the test did not
    start, its result would not skip time)."""
    handle = message_batches_of(client, batch)
    await eventually(lambda: _closed(handle), "the Message Batches workflow ends")
    return await handle.result()


async def batches_progress(client: Client, batch: FakeBatch) -> MessageBatchesProgress:
    return await message_batches_of(client, batch).query(MessageBatchesWorkflow.progress)


async def test_an_open_batch_is_polled_on_durable_timers_backing_off_to_the_configured_interval(
    own_ts_client: Client, task_queue: str
) -> None:
    batch = batch_mode(1)
    api = FakeMessageBatchApi(polls_to_end=6)
    plan = MessageBatchPlan(gather_s=30, poll_initial_s=10, poll_max_s=60)

    progress = await run_job(own_ts_client, task_queue, batch, api, plan=plan)

    assert progress.status == JobStatus.COMPLETED and progress.successful == 1
    (sent,) = api.batches
    polls = sent.polled_at
    gaps = [round((later - earlier).total_seconds()) for earlier, later in itertools.pairwise(polls)]
    assert gaps == [20, 40, 60, 60, 60], "each wait doubles from the first 10 s, up to the 60 s configured"
    history = await message_batches_of(own_ts_client, batch).fetch_history()
    kinds = [event.event_type for event in history.events]
    assert kinds.count(EventType.EVENT_TYPE_TIMER_FIRED) >= len(polls), "the waits are durable timers"
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["submit_message_batch"] + ["poll_message_batch"] * 6 + [
        "store_message_batch_results",
        "announce_message_batch_results",
    ], (
        "no activity is held open while the batch runs"
    )


async def test_the_workflow_hears_of_the_first_request_of_a_gathering_and_of_a_full_batch_only(
    own_ts_client: Client, task_queue: str
) -> None:
    # Seven requests, three to a batch: told of the first (a gathering starts) and of the third
    # (a batch is full); the claim counts the rest, so the last request needs no signal either.
    batch = batch_mode(7)
    api = FakeMessageBatchApi()

    progress = await run_job(own_ts_client, task_queue, batch, api, plan=PLAN.model_copy(update={"max_requests": 3}))

    assert progress.status == JobStatus.COMPLETED and progress.successful == 7
    sizes = [len(b.custom_ids) for b in api.batches]
    assert sum(sizes) == 7 and max(sizes) == 3
    history = await message_batches_of(own_ts_client, batch).fetch_history()
    told = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert told.count("requests_waiting") < 7 and "request_ready" not in told, told


async def test_a_request_told_of_while_a_submission_runs_goes_into_a_later_batch(
    own_time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    # A fresh run claims what waits once its first gathering ends: nothing yet. While that
    # submission reads and creates its batch, the item stages and tells of it; the claim's count
    # (0) must not wipe that out, or the request would wait for good.
    ts_client = own_time_skipping_env.client
    batch = batch_mode(1, begin_gate=asyncio.Event())
    api = FakeMessageBatchApi(submit_gate=asyncio.Event())
    async with worker_for(ts_client, task_queue, batch, api):
        # The item's first step is held: an activity under way keeps the server from skipping
        # time, so the gathering ends in real time.
        handle = await start(ts_client, task_queue, batch, PLAN.model_copy(update={"gather_s": 1}))
        await eventually(lambda: api.submissions_held == 1, "the first submission has claimed nothing and waits")

        assert batch.begin_gate is not None and api.submit_gate is not None
        batch.begin_gate.set()
        await eventually(lambda: len(api.staged) == 1, "the item staged its request meanwhile")
        api.submit_gate.set()
        progress = await asyncio.wait_for(handle.result(), timeout=60)  # lost, it would wait for good

    assert progress.status == JobStatus.COMPLETED and progress.successful == 1
    assert [b.custom_ids for b in api.batches] == [list(api.staged)]


async def test_errored_and_expired_requests_go_into_later_batches_until_one_succeeds(
    own_ts_client: Client, task_queue: str
) -> None:
    ts_client = own_ts_client
    batch = batch_mode(2)
    api = FakeMessageBatchApi(results={0: [errored("overloaded_error", "Overloaded"), EXPIRED]})

    progress = await run_job(ts_client, task_queue, batch, api)

    assert progress.status == JobStatus.COMPLETED and progress.successful == 2
    first = api.requests_of(batch.items[0].item_id)
    assert [api.batch_of(custom_id) for custom_id in first] == [0, 1, 2], "each resend goes into the next batch"
    assert [api.batch_of(custom_id) for custom_id in api.requests_of(batch.items[1].item_id)] == [0]
    assert [i.finish_calls for i in batch.items] == [1, 1]


async def test_a_request_that_keeps_expiring_fails_its_item_at_the_attempt_cap(own_ts_client: Client, task_queue: str) -> None:
    ts_client = own_ts_client
    batch = batch_mode(2)
    api = FakeMessageBatchApi(results={0: [EXPIRED] * 3})

    progress = await run_job(ts_client, task_queue, batch, api, claude=ClaudeCallPlan(max_attempts=3))

    assert (progress.status, progress.successful, progress.failed) == (JobStatus.COMPLETED, 1, 1)
    failed = batch.items[0]
    assert failed.status == ItemStatus.FAILED
    assert failed.error_message == "gave up after 3 Message Batch requests; last: the request expired"
    assert failed.error_type == BATCH_REQUEST_ATTEMPTS_EXHAUSTED
    assert len(api.requests_of(failed.item_id)) == 3, "no request beyond the cap"


async def test_an_invalid_request_fails_its_item_with_the_apis_message_and_is_never_resent(
    own_ts_client: Client, task_queue: str
) -> None:
    ts_client = own_ts_client
    message = "max_tokens: 999999 > 64000, which is the maximum allowed number of output tokens"
    batch = batch_mode(2)
    api = FakeMessageBatchApi(results={1: [errored("invalid_request_error", message)]})

    progress = await run_job(ts_client, task_queue, batch, api)

    assert (progress.successful, progress.failed) == (1, 1)
    failed = batch.items[1]
    assert failed.status == ItemStatus.FAILED
    assert failed.error_message == f"Claude API refused the request in a Message Batch: {message} (invalid_request_error)"
    assert failed.error_type == ANTHROPIC_INVALID_REQUEST
    assert len(api.requests_of(failed.item_id)) == 1
    assert len(api.batches) == 1


async def test_the_repair_of_an_unusable_reply_goes_into_the_next_batch(own_ts_client: Client, task_queue: str) -> None:
    ts_client = own_ts_client
    batch = batch_mode(3, unusable_replies={0: 1})
    api = FakeMessageBatchApi()

    progress = await run_job(ts_client, task_queue, batch, api)

    assert progress.status == JobStatus.COMPLETED and progress.successful == 3
    first, repair = (api.staged[c] for c in api.requests_of(batch.items[0].item_id))
    assert first.generate.repair is None
    assert repair.generate.repair is not None and repair.generate.repair.problem == PROBLEM
    assert repair.generate.repair.rejected_raw_key == f"raw/test-user/{first.generate.conversation_id}_raw.json"
    assert [len(b.custom_ids) for b in api.batches] == [3, 1], "the repair alone, in the batch after"


async def test_pause_sends_no_new_batch_while_the_open_one_finishes_and_its_results_are_kept(
    own_time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    ts_client = own_time_skipping_env.client
    batch = batch_mode(3, unusable_replies={0: 1})
    api = FakeMessageBatchApi(end_gate=asyncio.Event())
    async with worker_for(ts_client, task_queue, batch, api):
        # A full batch (max_requests) goes out without waiting for the gathering to end.
        handle = await start(ts_client, task_queue, batch, PLAN.model_copy(update={"max_requests": 3}))
        await eventually(lambda: len(api.batches) == 1 and len(api.batches[0].custom_ids) == 3, "a batch is open")

        await handle.signal(BatchJobWorkflow.pause)
        await eventually(lambda: _paused(ts_client, batch), "the Message Batches workflow is paused")
        assert api.end_gate is not None
        api.end_gate.set()
        await own_time_skipping_env.sleep(PLAN.poll_initial_s)  # the next poll finds the batch ended
        await eventually(lambda: _waiting(ts_client, batch, 1), "the repair waits for a batch")

        assert [i.status for i in batch.items] == [ItemStatus.PROCESSING, ItemStatus.COMPLETED, ItemStatus.COMPLETED], (
            "the results of the batch that was open are kept"
        )
        assert len(api.batches) == 1 and len(api.waiting) == 1, "no new batch while paused"

        await handle.signal(BatchJobWorkflow.resume)
        progress = await handle.result()

    assert progress.status == JobStatus.COMPLETED and progress.successful == 3
    assert [len(b.custom_ids) for b in api.batches] == [3, 1]
    assert api.cancel_calls == 0


async def test_cancel_cancels_the_open_batch_and_its_items_end_cancelled(
    own_time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    ts_client = own_time_skipping_env.client
    batch = batch_mode(3)
    api = FakeMessageBatchApi(end_gate=asyncio.Event())
    async with worker_for(ts_client, task_queue, batch, api):
        handle = await start(ts_client, task_queue, batch, PLAN.model_copy(update={"max_requests": 3}))
        await eventually(lambda: len(api.batches) == 1 and len(api.batches[0].custom_ids) == 3, "a batch is open")

        await handle.signal(BatchJobWorkflow.cancel)
        progress = await job_outcome(handle)
        await own_time_skipping_env.sleep(PLAN.poll_initial_s)  # the next poll finds the batch ended
        batches = await message_batches_result(ts_client, batch)

    assert (progress.status, progress.cancelled, progress.completed) == (JobStatus.CANCELLED, 3, 0)
    assert [i.status for i in batch.items] == [ItemStatus.CANCELLED] * 3
    assert api.cancel_calls == 1 and api.batches[0].cancelled
    assert batches.open_batches == [] and batches.cancel_requested
    assert batches.submitted_batches == 1, "nothing new went out after the cancel"


async def _paused(client: Client, batch: FakeBatch) -> bool:
    return (await batches_progress(client, batch)).paused


async def _waiting(client: Client, batch: FakeBatch, count: int) -> bool:
    return (await batches_progress(client, batch)).waiting == count


async def _closed(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING


async def test_results_are_announced_in_steps_and_the_workflow_continues_as_new_between_them(
    own_ts_client: Client, task_queue: str
) -> None:
    # Twelve in flight of 36: while a batch's results go out, finished items make room for new
    # ones, whose requests are signalled back at once (the flood that took a 10,000-item job's
    # Message Batches run to 2,004 events when all results went out in one step).
    batch = batch_mode(36)
    api = FakeMessageBatchApi()
    plan = PLAN.model_copy(update={"in_flight_items": 12, "results_per_step": 2})
    limit = 100

    progress = await run_job(own_ts_client, task_queue, batch, api, plan=plan, history_event_limit=limit)
    batches = await message_batches_result(own_ts_client, batch)

    assert progress.status == JobStatus.COMPLETED and progress.successful == 36
    assert [i.finish_calls for i in batch.items] == [1] * 36, "each result announced to its item once"
    assert all(len(b.announced) == len(b.custom_ids) for b in api.batches)
    assert all(b.announce_steps >= len(b.custom_ids) / 2 for b in api.batches), "two results a step"
    lengths = await run_lengths(own_ts_client, message_batches_workflow_id(batch.job_id))
    assert batches.runs == len(lengths) >= 2, "the limit made the workflow continue as new"
    assert max(lengths) <= limit, f"a run passed the limit: {lengths}"


async def test_an_item_fails_instead_of_waiting_for_good_when_its_message_batches_workflow_ends_without_its_result(
    own_time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    ts_client = own_time_skipping_env.client
    batch = batch_mode(2)
    api = FakeMessageBatchApi(end_gate=asyncio.Event())  # the batch never ends
    async with worker_for(ts_client, task_queue, batch, api):
        handle = await start(ts_client, task_queue, batch, PLAN.model_copy(update={"max_requests": 2}))
        await eventually(lambda: len(api.batches) == 1 and len(api.batches[0].custom_ids) == 2, "a batch is open")
        await message_batches_of(ts_client, batch).terminate("an operator ended it")

        progress = await asyncio.wait_for(job_outcome(handle), timeout=60)  # without the check, never

    assert (progress.status, progress.failed) == (JobStatus.FAILED, 2), "every item failed"
    assert [i.status for i in batch.items] == [ItemStatus.FAILED] * 2
    assert all("Message Batches workflow ended" in (i.error_message or "") for i in batch.items)
    assert [i.error_type for i in batch.items] == [MESSAGE_BATCHES_ENDED] * 2
    assert api.checks == 2, "each item asked once, an hour after staging"


async def test_an_item_whose_result_announcement_was_lost_takes_the_stored_result(
    own_ts_client: Client, task_queue: str
) -> None:
    batch = batch_mode(2)
    api = FakeMessageBatchApi(announcements_lost=True)

    progress = await asyncio.wait_for(run_job(own_ts_client, task_queue, batch, api), timeout=60)

    assert progress.status == JobStatus.COMPLETED and progress.successful == 2
    assert api.checks == 2 and len(api.batches) == 1, "each item asked once and nothing was sent again"
