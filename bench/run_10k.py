"""Benchmark: a 10,000-item batch through the real batch and item workflows on the real Temporal
dev server, with in-memory activities, to measure what the workflows themselves cost: the largest
history of any run of the batch workflow (it must stay far below Temporal's 51,200-event limit),
the number of continue-as-new runs, and the wall time.

    .venv/bin/python -m bench.run_10k [--items 10000] [--concurrency 100]

Writes bench/results/run_10k.json.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
import uuid
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.results_file import save_result
from devtools.binaries import venv_binary
from models import search_attributes
from models.enums import ItemStatus
from models.messages import BatchJobInput
from models.workflow_ids import job_workflow_id
from tests.fakes import FakeActivities, FakeBatch
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow

TEMPORAL_HISTORY_EVENT_LIMIT = 51_200


async def history_lengths_of_every_run(client: Client, workflow_id: str, first_run_id: str | None) -> list[int]:
    """Follow the continue-as-new chain from the first run, counting each run's events exactly."""
    lengths: list[int] = []
    run_id = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.append(len(history.events))
        last = history.events[-1]
        continued = last.workflow_execution_continued_as_new_event_attributes
        run_id = continued.new_execution_run_id if last.HasField("workflow_execution_continued_as_new_event_attributes") else None
    return lengths


async def run(items: int, concurrency: int, history_event_limit: int) -> dict:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
    )
    batch = FakeBatch.of(items, concurrency=concurrency)
    task_queue = f"bench-{uuid.uuid4()}"
    workflow_id = job_workflow_id(batch.job_id)
    started = time.monotonic()
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow],
        activities=FakeActivities(batch, env.client).all(),
        max_concurrent_workflow_tasks=200,
        max_concurrent_activities=400,
    ):
        handle = await env.client.start_workflow(
            BatchJobWorkflow.run,
            BatchJobInput(job_id=batch.job_id, history_event_limit=history_event_limit),
            id=workflow_id,
            task_queue=task_queue,
        )
        progress = await handle.result()
    wall_s = time.monotonic() - started
    run_lengths = await history_lengths_of_every_run(env.client, workflow_id, handle.first_execution_run_id)
    item_histories = [
        execution.history_length
        async for execution in env.client.list_workflows("WorkflowType = 'BatchItemWorkflow'", limit=200)
    ]
    await env.shutdown()
    largest = max(run_lengths)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "items": items,
        "concurrency": concurrency,
        "history_event_limit_setting": history_event_limit,
        "job_status": progress.status.value,
        "successful": progress.successful,
        "every_item_ran_once": all(i.finish_calls == 1 and i.status == ItemStatus.COMPLETED for i in batch.items),
        "batch_workflow_runs": len(run_lengths),
        "history_events_per_run": run_lengths,
        "largest_batch_run_history_events": largest,
        "largest_history_as_share_of_temporal_limit": round(largest / TEMPORAL_HISTORY_EVENT_LIMIT, 4),
        "item_workflow_history_events_max_of_sample": max(item_histories),
        "wall_time_s": round(wall_s, 1),
        "items_per_second": round(items / wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--history-event-limit", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args.items, args.concurrency, args.history_event_limit))
    save_result("run_10k", result)


if __name__ == "__main__":
    main()
