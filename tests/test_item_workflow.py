"""The item workflow's Claude step on the time-skipping server, with in-memory activities: where
the calls run, and the one repair of an unusable reply (a decision the item's history shows)."""

from __future__ import annotations

import contextlib
import uuid

from temporalio.client import Client
from temporalio.worker import Worker

from activities.errors import INVALID_OUTPUT
from models.enums import ItemStatus, JobStatus
from models.messages import BatchJobInput, ClaudeCallPlan, GenerateInput
from models.workflow_ids import item_conversation_id, item_workflow_id, job_workflow_id
from tests.fakes import FakeActivities, FakeBatch
from tests.helpers import step_tries
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow

PROBLEM = "the reply is not valid JSON: Expecting value: line 1 column 1 (char 0)"


async def run(client: Client, task_queue: str, batch: FakeBatch, claude_queue: str | None = None) -> None:
    """The workflows and data steps on `task_queue`; the Claude call on `claude_queue`, if given."""
    fakes = FakeActivities(batch, client)
    data_steps = [a for a in fakes.all() if a != fakes.generate_conversation]
    async with contextlib.AsyncExitStack() as running:
        await running.enter_async_context(
            Worker(client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow],
                   activities=data_steps if claude_queue else fakes.all())
        )
        if claude_queue:
            await running.enter_async_context(
                Worker(client, task_queue=claude_queue, activities=[fakes.generate_conversation])
            )
        await client.execute_workflow(
            BatchJobWorkflow.run,
            BatchJobInput(job_id=batch.job_id, claude=ClaudeCallPlan(task_queue=claude_queue)),
            id=job_workflow_id(batch.job_id),
            task_queue=task_queue,
        )


def calls_of(batch: FakeBatch, position: int) -> list[GenerateInput]:
    return [r for r in batch.generate_requests if r.item_id == batch.items[position].item_id]


async def test_claude_calls_run_on_the_queue_the_job_input_names(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3)
    claude_queue = f"claude-{uuid.uuid4()}"

    await run(ts_client, task_queue, batch, claude_queue)

    assert batch.job_status == JobStatus.COMPLETED
    assert batch.claude_queues == [claude_queue] * 3


async def test_without_a_claude_queue_the_calls_run_on_the_items_own_queue(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(2)

    await run(ts_client, task_queue, batch)

    assert batch.claude_queues == [task_queue] * 2


async def test_an_unusable_reply_gets_one_repair_that_quotes_the_problem(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(2, unusable_replies={0: 1})

    await run(ts_client, task_queue, batch)

    assert [i.status for i in batch.items] == [ItemStatus.COMPLETED] * 2
    first, repair = calls_of(batch, 0)
    assert first.repair is None and repair.repair is not None
    assert repair.repair.problem == PROBLEM, "the model is told what was wrong, not where the raw file is"
    assert repair.repair.rejected_raw_key == f"raw/test-user/{first.conversation_id}_raw.json"
    assert repair.conversation_id == first.conversation_id == item_conversation_id(batch.items[0].item_id)
    assert len(calls_of(batch, 1)) == 1


async def test_a_second_unusable_reply_fails_the_item_for_good(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(2, unusable_replies={0: 2})

    await run(ts_client, task_queue, batch)

    failed = batch.items[0]
    assert failed.status == ItemStatus.FAILED
    assert failed.error_message is not None
    assert failed.error_message.startswith(PROBLEM + "; raw response kept at raw/test-user/")
    assert failed.error_message.endswith("_raw_repair.json")
    assert failed.error_type == INVALID_OUTPUT
    assert len(calls_of(batch, 0)) == 2
    assert batch.items[1].status == ItemStatus.COMPLETED


async def test_a_data_step_whose_local_try_meets_an_outage_goes_on_as_an_activity(ts_client: Client, task_queue: str) -> None:
    # The local try and the activity's first attempt find PostgreSQL down; the second attempt passes.
    batch = FakeBatch.of(1, begin_outages=2)

    await run(ts_client, task_queue, batch)

    item = batch.items[0]
    assert batch.job_status == JobStatus.COMPLETED and item.status == ItemStatus.COMPLETED
    assert batch.begin_calls == 3
    history = await ts_client.get_workflow_handle(item_workflow_id(item.item_id)).fetch_history()
    # As an activity, its retries show in `status` and the web UI while the outage lasts.
    assert step_tries(history, "prepare_item") == ["local", "attempt 2"]
    assert step_tries(history, "complete_item") == ["local"]

