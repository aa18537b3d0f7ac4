"""Benchmark: a 10,000-item Message Batches job through the real job, Message Batches and item
workflows on the real Temporal dev server, with in-memory activities and a fake Message Batches
API, to measure what the workflows' histories cost: the largest run of the job workflow, of the
Message Batches workflow and of the items (each must stay <= 2,000 events). That no history
carries a prompt is a test on the real stack (tests/test_message_batches.py): here the fake
template step resolves no text at all.

Some replies are unusable (their repair goes into a later batch) and some requests expire (they
are sent again), so every path a request can take adds its events.

    .venv/bin/python -m bench.batch_mode_10k [--items 10000] [--in-flight-items 10000]

Writes bench/results/batch_mode_10k.json.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.results_file import save_result
from bench.run_10k import runs_of, wait_for_job, wait_for_result
from brightrun.settings import Settings
from devtools.binaries import venv_binary
from models import search_attributes
from models.enums import DeliveryMode, ItemStatus
from models.messages import BatchJobInput, MessageBatchesProgress, MessageBatchPlan
from models.workflow_ids import job_workflow_id, message_batches_workflow_id
from tests.fakes import EXPIRED, FakeActivities, FakeBatch, FakeMessageBatchActivities, FakeMessageBatchApi
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.message_batches import MessageBatchesWorkflow

HISTORY_EVENT_BOUND = 2_000
ITEM_SAMPLE = 200


def tail_of(history: WorkflowHistory, history_event_limit: int) -> dict[str, int]:
    """What a run recorded after it reached the length at which it decides to continue as new:
    the events its margin has to hold."""
    past = history.events[history_event_limit * 4 // 5 :]
    return dict(Counter(EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower() for event in past))


async def run(items: int, history_event_limit: int, in_flight_items: int) -> dict:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
    )
    picks = random.Random(7)
    positions = list(range(items))
    unusable = picks.sample(positions, items // 50)  # 2%: a repair each
    expiring = picks.sample(positions, items // 100)  # 1%: sent twice
    # Enrichment pages as large as the worker's (the fakes' default of 2 makes the job's end a
    # page per two conversations, thousands of events that a real job does not have).
    page_size = Settings.model_fields["enrichment_page_size"].default
    batch = FakeBatch.of(
        items, mode=DeliveryMode.BATCH, unusable_replies=dict.fromkeys(unusable, 1), enrich_page_size=page_size
    )
    api = FakeMessageBatchApi(results={position: [EXPIRED] for position in expiring}, polls_to_end=2)
    plan = MessageBatchPlan(gather_s=5, poll_initial_s=10, poll_max_s=60, in_flight_items=in_flight_items)
    task_queue = f"bench-{uuid.uuid4()}"
    client = env.client
    started = time.monotonic()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow, MessageBatchesWorkflow],
        activities=FakeActivities(batch, client).all() + FakeMessageBatchActivities(batch, api, client).all(),
        max_concurrent_workflow_tasks=Settings.model_fields["worker_max_concurrent_workflow_tasks"].default,
        max_concurrent_activities=400,
    ):
        handle = await client.start_workflow(
            BatchJobWorkflow.run,
            BatchJobInput(job_id=batch.job_id, message_batches=plan, history_event_limit=history_event_limit),
            id=job_workflow_id(batch.job_id),
            task_queue=task_queue,
        )
        progress = await wait_for_job(handle)
        batches_handle = client.get_workflow_handle(
            message_batches_workflow_id(batch.job_id), result_type=MessageBatchesProgress
        )
        await wait_for_result(batches_handle)
    wall_s = time.monotonic() - started
    job_runs = await runs_of(client, job_workflow_id(batch.job_id))
    batches_runs = await runs_of(client, message_batches_workflow_id(batch.job_id))
    item_histories = [
        await client.get_workflow_handle(execution.id).fetch_history()
        async for execution in client.list_workflows("WorkflowType = 'BatchItemWorkflow'", limit=ITEM_SAMPLE)
    ]
    await env.shutdown()
    job_lengths = [len(h.events) for h in job_runs]
    batches_lengths = [len(h.events) for h in batches_runs]
    item_lengths = [len(h.events) for h in item_histories]
    largest = max(job_lengths + batches_lengths + item_lengths)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "items": items,
        "history_event_limit_setting": history_event_limit,
        "message_batch_plan": plan.model_dump(),
        "unusable_replies": len(unusable),
        "expired_requests": len(expiring),
        "job_status": progress.status.value,
        "successful": progress.successful,
        "every_item_completed_once": all(i.finish_calls == 1 and i.status == ItemStatus.COMPLETED for i in batch.items),
        "items_not_completed_once": [
            {"position": i.position, "status": i.status.value, "finish_calls": i.finish_calls, "error": i.error_message}
            for i in batch.items
            if i.finish_calls != 1 or i.status != ItemStatus.COMPLETED
        ],
        "message_batches": len(api.batches),
        "batch_requests": len(api.staged),
        "job_workflow_runs": len(job_lengths),
        "job_history_events_per_run": job_lengths,
        "largest_job_run_events": max(job_lengths),
        "largest_job_run_events_past_four_fifths": tail_of(max(job_runs, key=lambda h: len(h.events)), history_event_limit),
        "message_batches_workflow_runs": len(batches_lengths),
        "message_batches_history_events_per_run": batches_lengths,
        "largest_message_batches_run_events": max(batches_lengths),
        "largest_message_batches_run_events_past_four_fifths": tail_of(
            max(batches_runs, key=lambda h: len(h.events)), history_event_limit
        ),
        "item_histories_sampled": len(item_lengths),
        "largest_item_history_events_of_sample": max(item_lengths),
        "every_run_within_2000_events": largest <= HISTORY_EVENT_BOUND,
        "wall_time_s": round(wall_s, 1),
        "items_per_second": round(items / wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--history-event-limit", type=int, default=BatchJobInput.model_fields["history_event_limit"].default)
    # All 10,000 in flight at once (the default) took 1,049 s on 2 cores with 10 workflow tasks at
    # once; with 200 at once, thousands of tasks went past their timeout and it took over 43 minutes.
    parser.add_argument("--in-flight-items", type=int, default=MessageBatchPlan.model_fields["in_flight_items"].default)
    args = parser.parse_args()
    result = asyncio.run(run(args.items, args.history_event_limit, args.in_flight_items))
    save_result("batch_mode_10k", result)


if __name__ == "__main__":
    main()
