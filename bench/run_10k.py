"""Benchmark: a large batch through the real batch and item workflows on the real Temporal dev
server, to measure what the engine costs: items per minute, events per item, the largest history
of any run of the batch workflow (it must stay far below Temporal's 51,200-event limit) and the
number of continue-as-new runs.

    .venv/bin/python -m bench.run_10k [--items 10000] [--concurrency 100]
    .venv/bin/python -m bench.run_10k --stack real [--items 1024] [--concurrency 100]

In memory (the default) the activities are fakes: only the workflows' cost. With `--stack real`
the whole local stack runs (PostgreSQL, SeaweedFS, a `worker.py` process, the stand-in answering
at once, the calls-per-minute limit lifted), so the engine, not the API, sets the pace; the
worker's memory is sampled every second.

Writes bench/results/run_10k.json (in memory) or bench/results/run_stack.json (real stack).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
from sqlalchemy import func, select
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.rate_limit import ARCS, PERSONAS, TOPICS
from bench.results_file import save_result
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.binaries import venv_binary
from devtools.standin_control import StandinControl
from models import search_attributes
from models.enums import ItemStatus, Tier
from models.messages import BatchJobInput, JobProgress
from models.tables import BatchItem
from models.workflow_ids import job_workflow_id
from service import batches
from service.job_outcome import job_outcome
from tests.fakes import FakeActivities, FakeBatch
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow

TEMPORAL_HISTORY_EVENT_LIMIT = 51_200
T = TypeVar("T")


async def wait_for_result(handle: WorkflowHandle[Any, T]) -> T:
    """The workflow's result, however long it takes: on a loaded machine the server may end a long
    poll with 'context deadline exceeded' (it ended a 10,000-item run's wait after 37 minutes)."""
    while True:
        try:
            return await handle.result()
        except RPCError as exc:
            if exc.status != RPCStatusCode.DEADLINE_EXCEEDED:
                raise


async def wait_for_job(handle: WorkflowHandle) -> JobProgress:
    """A job's progress however its workflow ended (completed, failed, cancelled: see
    service/job_outcome.py), however long it takes (as wait_for_result)."""
    while True:
        try:
            return await job_outcome(handle)
        except RPCError as exc:
            if exc.status != RPCStatusCode.DEADLINE_EXCEEDED:
                raise


async def runs_of(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of a workflow, first to last: back from the last run to the first, then each."""
    latest = await client.get_workflow_handle(workflow_id).fetch_history()
    histories: list[WorkflowHistory] = []
    run_id: str | None = latest.events[0].workflow_execution_started_event_attributes.first_execution_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        continued = last.HasField("workflow_execution_continued_as_new_event_attributes")
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else None
    return histories


async def run(items: int, concurrency: int, history_event_limit: int) -> dict:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
    )
    batch = FakeBatch.of(items, concurrency=concurrency)
    task_queue = f"bench-{uuid.uuid4()}"
    workflow_id = job_workflow_id(batch.job_id)
    # The dev server is this process's child; this process is the worker (and the fakes).
    server = next(child for child in psutil.Process().children() if child.name().startswith("temporal"))
    parts = {"temporal": server, "worker": psutil.Process()}
    cpu_before = {name: _cpu_s(process, children=False) for name, process in parts.items()}
    started = time.monotonic()
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow],
        activities=FakeActivities(batch, env.client).all(),
        max_concurrent_workflow_tasks=Settings.model_fields["worker_max_concurrent_workflow_tasks"].default,
        max_concurrent_activities=400,
    ):
        handle = await env.client.start_workflow(
            BatchJobWorkflow.run,
            BatchJobInput(job_id=batch.job_id, history_event_limit=history_event_limit),
            id=workflow_id,
            task_queue=task_queue,
        )
        progress = await wait_for_job(handle)
    wall_s = time.monotonic() - started
    cpu_s = {name: _cpu_s(process, children=False) - cpu_before[name] for name, process in parts.items()}
    run_lengths = [len(run.events) for run in await runs_of(env.client, workflow_id)]
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
        "items_per_minute": round(items / wall_s * 60),
        # The workflows' own cost (no I/O in the fake steps): the floor of the real stack's.
        "cpu_s_per_item": {part: round(cpu_s[part] / items, 4) for part in cpu_s},
        "cpu_s_per_item_all_parts": round(sum(cpu_s.values()) / items, 4),
    }


async def _sample_memory(pid: int, samples: list[int], every_s: float = 1.0) -> None:
    process = psutil.Process(pid)
    while True:
        samples.append(process.memory_info().rss)
        await asyncio.sleep(every_s)


def _cpu_s(process: psutil.Process, children: bool = True) -> float:
    """CPU seconds of a process and (unless not asked) its children, the live ones and those it has reaped."""
    own = process.cpu_times()
    total = own.user + own.system
    if not children:
        return total
    total += own.children_user + own.children_system
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # it ended meanwhile
            total += sum(child.cpu_times()[:2])
    return total


def _catalog_for(items: int) -> dict:
    """The 64 catalog combinations, each sampled enough times to make `items` (a multiple of 64)."""
    if items % len(PERSONAS) ** 3:
        raise SystemExit(f"--items must be a multiple of {len(PERSONAS) ** 3} on the real stack")
    return {"personas": PERSONAS, "arcs": ARCS, "topics": TOPICS, "samples": items // len(PERSONAS) ** 3}


async def run_on_stack(items: int, concurrency: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-run-stack-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        settings = devstack.standin_settings(
            env, claude_calls_per_minute=1_000_000, claude_max_concurrent_calls=concurrency
        )
        worker_env = {
            **os.environ, **env, "TASK_QUEUE": settings.task_queue, "CLAUDE_TASK_QUEUE": settings.claude_task_queue,
            "CLAUDE_CALLS_PER_MINUTE": str(settings.claude_calls_per_minute),
            "CLAUDE_MAX_CONCURRENT_CALLS": str(concurrency), "ANTHROPIC_API_KEY": "", "LOG_FORMAT": "json",
        }  # fmt: skip
        worker_pid = devstack.start_worker(root, worker_env)
        await StandinControl(env["ANTHROPIC_BASE_URL"]).configure(latency_ms=0)
        engine = create_engine(settings)
        sessions = create_sessionmaker(engine)
        client = await connect(settings)
        request = batches.LaunchRequest(**_catalog_for(items), tier=Tier.TEMPLATE, concurrency=concurrency)
        memory: list[int] = []
        sampling = asyncio.create_task(_sample_memory(worker_pid, memory))
        parts = {name: psutil.Process(pid) for name, pid in devstack.running_parts(root).items()}
        cpu_before = {name: _cpu_s(process) for name, process in parts.items()}
        started = time.monotonic()
        job = await batches.launch(sessions, client, settings, request)
        handle = client.get_workflow_handle(job.workflow_id, result_type=JobProgress)
        progress = await wait_for_job(handle)
        wall_s = time.monotonic() - started
        cpu_s = {name: _cpu_s(process) for name, process in parts.items()}
        sampling.cancel()
        run_lengths = [len(run.events) for run in await runs_of(client, job.workflow_id)]
        item_histories = [
            execution.history_length
            async for execution in client.list_workflows("WorkflowType = 'BatchItemWorkflow'", limit=200)
        ]
        async with sessions() as session:
            completed_once = await session.scalar(
                select(func.count()).select_from(BatchItem).where(
                    BatchItem.batch_job_id == job.job_id, BatchItem.status == ItemStatus.COMPLETED,
                    BatchItem.conversation_id.is_not(None),
                )
            )  # fmt: skip
        await engine.dispose()
        standin_requests = (await StandinControl(env["ANTHROPIC_BASE_URL"]).stats())["requests"]
    finally:
        devstack.stop(root)
    mib = [round(rss / 2**20) for rss in memory]
    tenth = max(1, len(mib) // 10)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "items": items,
        "concurrency": concurrency,
        "job_status": progress.status.value,
        "successful": progress.successful,
        "items_completed_and_linked": completed_once,
        "claude_requests": standin_requests,
        "wall_time_s": round(wall_s, 1),
        "items_per_minute": round(items / wall_s * 60),
        "batch_workflow_runs": len(run_lengths),
        "history_events_per_run": run_lengths,
        "largest_batch_run_history_events": max(run_lengths),
        "item_workflow_history_events_max_of_sample": max(item_histories),
        "events_per_item": round((sum(run_lengths) + sum(item_histories) / len(item_histories) * items) / items, 1),
        # Every part of the stack (postgres with its backends). At 1,200 items/min two cores
        # give each item 0.1 CPU-s in all.
        "cpu_s_per_item": {part: round((cpu_s[part] - cpu_before[part]) / items, 4) for part in cpu_s},
        "cpu_s_per_item_all_parts": round(sum(cpu_s[part] - cpu_before[part] for part in cpu_s) / items, 4),
        # Flat memory: the last tenth of the run is not above the second tenth.
        "worker_rss_mib": {"first_tenth_max": max(mib[tenth : 2 * tenth] or mib), "last_tenth_max": max(mib[-tenth:]),
                           "max": max(mib)},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", choices=["memory", "real"], default="memory")
    parser.add_argument("--items", type=int, help="default: 10,000 in memory, 1,024 on the real stack")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--history-event-limit", type=int, default=2000, help="in memory only")
    args = parser.parse_args()
    if args.stack == "real":
        save_result("run_stack", asyncio.run(run_on_stack(args.items or 1024, args.concurrency)))
    else:
        save_result("run_10k", asyncio.run(run(args.items or 10_000, args.concurrency, args.history_event_limit)))


if __name__ == "__main__":
    main()
