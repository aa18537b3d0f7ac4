"""Record the workflow histories the replay test replays.

    .venv/bin/python -m tests.record_histories [online] [batch_mode] [export] [ended]   (all by default)

Run it only when a workflow change is meant to change histories (and then version the change
for workflows already running); the replay test exists to catch every other change. First move
the histories it replaces into a folder of tests/histories named for the change: the replay test
replays every saved history, as runs under way at the change must still replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from devtools.binaries import venv_binary
from models.enums import DeliveryMode
from models.messages import BatchJobInput, ExportInput, ExportSelection, JudgePlan, MessageBatchPlan
from models.workflow_ids import item_workflow_id, job_workflow_id, message_batches_workflow_id
from tests.conftest import register_search_attributes
from tests.fakes import (
    EXPIRED,
    FakeActivities,
    FakeBatch,
    FakeExportActivities,
    FakeMessageBatchActivities,
    FakeMessageBatchApi,
)
from tests.helpers import eventually
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.export import ExportWorkflow, export_workflow_id
from workflows.message_batches import MessageBatchesWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def record(parts: list[str]) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    task_queue = f"record-{uuid.uuid4()}"
    targets: dict[str, str] = {}
    for part in parts:
        targets.update(await RECORDERS[part](env.client, task_queue))
    for filename, workflow_id in targets.items():
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
        (HISTORIES / filename).write_text(history.to_json())
        print(f"wrote {filename} ({len(history.events)} events)")
    await env.shutdown()


async def record_online(client: Client, task_queue: str) -> dict[str, str]:
    batch = FakeBatch.of(
        4, concurrency=2, failing_positions={3: "Claude API 400: prompt is too long"}, unusable_replies={1: 1}
    )
    async with Worker(client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow],
                      activities=FakeActivities(batch, client).all()):
        await client.execute_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=batch.job_id), id=job_workflow_id(batch.job_id), task_queue=task_queue
        )
    return {
        "batch_job.json": job_workflow_id(batch.job_id),
        "batch_item_completed.json": item_workflow_id(batch.items[0].item_id),
        "batch_item_repaired.json": item_workflow_id(batch.items[1].item_id),
        "batch_item_failed.json": item_workflow_id(batch.items[3].item_id),
    }


async def record_judged(client: Client, task_queue: str) -> dict[str, str]:
    """A judged job: an item judged at once, and one whose first verdict was invalid (repaired)."""
    batch = FakeBatch.of(2, judge=JudgePlan(rubric_name="advisor-conversations", rubric_version=1), invalid_verdicts={1: 1})
    async with Worker(client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow],
                      activities=FakeActivities(batch, client).all()):
        await client.execute_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=batch.job_id), id=job_workflow_id(batch.job_id), task_queue=task_queue
        )
    return {
        "batch_item_judged.json": item_workflow_id(batch.items[0].item_id),
        "batch_item_judge_repaired.json": item_workflow_id(batch.items[1].item_id),
    }


async def record_batch_mode(client: Client, task_queue: str) -> dict[str, str]:
    """A Message Batches job: one reply unusable (its repair goes into the next batch), one
    request expired (sent again); timers long enough to fire only when the server skips time."""
    batch = FakeBatch.of(3, mode=DeliveryMode.BATCH, unusable_replies={1: 1})
    api = FakeMessageBatchApi(results={2: [EXPIRED]}, polls_to_end=2)
    plan = MessageBatchPlan(max_requests=3, gather_s=30, poll_initial_s=60, poll_max_s=120)
    async with Worker(client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow, MessageBatchesWorkflow],
                      activities=FakeActivities(batch, client).all() + FakeMessageBatchActivities(batch, api, client).all()):
        await client.execute_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=batch.job_id, message_batches=plan),
            id=job_workflow_id(batch.job_id), task_queue=task_queue,
        )
        batches = client.get_workflow_handle(message_batches_workflow_id(batch.job_id))
        # It ends on the job's close signal, once it has taken it.
        await eventually(
            lambda: _status_is_not(batches, WorkflowExecutionStatus.RUNNING), "the Message Batches workflow ends"
        )
    return {
        "batch_mode_job.json": job_workflow_id(batch.job_id),
        "message_batches.json": message_batches_workflow_id(batch.job_id),
        "batch_mode_item_repaired.json": item_workflow_id(batch.items[1].item_id),
        "batch_mode_item_resent.json": item_workflow_id(batch.items[2].item_id),
    }


async def record_export(client: Client, task_queue: str) -> dict[str, str]:
    export_id = uuid.uuid4()
    export_input = ExportInput(export_id=export_id, selection=ExportSelection(user="test-user", system_prompt="s"),
                               location="/tmp/export")
    async with Worker(client, task_queue=task_queue, workflows=[ExportWorkflow],
                      activities=FakeExportActivities(total=5, page_size=2).all()):
        await client.execute_workflow(ExportWorkflow.run, export_input, id=export_workflow_id(export_id), task_queue=task_queue)
    return {"export.json": export_workflow_id(export_id)}


async def record_ended(client: Client, task_queue: str) -> dict[str, str]:
    """Jobs that end failed (every item failed) and cancelled (by the cancel signal, one item in
    flight): their executions end Failed and Canceled (JOB_ENDS_IN_ITS_STATE)."""
    failed = FakeBatch.of(2, failing_positions={0: "Claude API 400: prompt is too long", 1: "Claude API 400: bad"})
    async with Worker(client, task_queue=f"{task_queue}-failed", workflows=[BatchJobWorkflow, BatchItemWorkflow],
                      activities=FakeActivities(failed, client).all()):
        handle = await client.start_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=failed.job_id), id=job_workflow_id(failed.job_id),
            task_queue=f"{task_queue}-failed",
        )
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
    cancelled = FakeBatch.of(3, concurrency=1, claude_gate=asyncio.Event())
    async with Worker(client, task_queue=f"{task_queue}-cancelled", workflows=[BatchJobWorkflow, BatchItemWorkflow],
                      activities=FakeActivities(cancelled, client).all()):
        handle = await client.start_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=cancelled.job_id), id=job_workflow_id(cancelled.job_id),
            task_queue=f"{task_queue}-cancelled",
        )
        await eventually(lambda: cancelled.generate_calls == 1, "an item is in flight")
        await handle.signal(BatchJobWorkflow.cancel)
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        assert cancelled.claude_gate is not None
        cancelled.claude_gate.set()
    return {"batch_job_failed.json": job_workflow_id(failed.job_id), "batch_job_cancelled.json": job_workflow_id(cancelled.job_id)}


async def _status_is_not(handle: WorkflowHandle, status: WorkflowExecutionStatus) -> bool:
    return (await handle.describe()).status != status


RECORDERS = {
    "online": record_online, "judged": record_judged, "batch_mode": record_batch_mode, "export": record_export,
    "ended": record_ended,
}


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:] or list(RECORDERS)))
