"""Record the workflow histories the replay test replays.

    .venv/bin/python -m tests.record_histories

Run it only when a workflow change is meant to change histories (and then version the change
for workflows already running); the replay test exists to catch every other change.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from devtools.binaries import venv_binary
from models.messages import BatchJobInput, ExportInput, ExportSelection
from models.workflow_ids import item_workflow_id, job_workflow_id
from tests.conftest import register_search_attributes
from tests.fakes import FakeActivities, FakeBatch, FakeExportActivities
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.export import ExportWorkflow, export_workflow_id

HISTORIES = Path(__file__).parent / "histories"


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    batch = FakeBatch.of(
        4, concurrency=2, failing_positions={3: "Claude API 400: prompt is too long"}, unusable_replies={1: 1}
    )
    task_queue = f"record-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow],
                      activities=FakeActivities(batch, env.client).all()):
        await env.client.execute_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=batch.job_id), id=job_workflow_id(batch.job_id), task_queue=task_queue
        )
    targets = {
        "batch_job.json": job_workflow_id(batch.job_id),
        "batch_item_completed.json": item_workflow_id(batch.items[0].item_id),
        "batch_item_repaired.json": item_workflow_id(batch.items[1].item_id),
        "batch_item_failed.json": item_workflow_id(batch.items[3].item_id),
    }
    export_id = uuid.uuid4()
    export_input = ExportInput(export_id=export_id, selection=ExportSelection(user="test-user", system_prompt="s"),
                               location="/tmp/export")
    async with Worker(env.client, task_queue=task_queue, workflows=[ExportWorkflow],
                      activities=FakeExportActivities(total=5, page_size=2).all()):
        await env.client.execute_workflow(ExportWorkflow.run, export_input, id=export_workflow_id(export_id), task_queue=task_queue)
    targets["export.json"] = export_workflow_id(export_id)
    for filename, workflow_id in targets.items():
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
        (HISTORIES / filename).write_text(history.to_json())
        print(f"wrote {filename} ({len(history.events)} events)")
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
