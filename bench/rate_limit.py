"""Benchmark: how close a batch runs to a configured Claude calls-per-minute limit, on the real
local stack (Temporal dev server, PostgreSQL, SeaweedFS, the stand-in at Claude's pace by default).

Phase 1: the stand-in enforces nothing; reports achieved calls/min as a share of the limit.
Phase 2: the stand-in enforces an account limit (rpm_limit) below ours; reports the 429s it sent.

    .venv/bin/python -m bench.rate_limit [--calls-per-minute 120] [--pace claude|instant] [--latency-ms 0] [--standin-rpm 40]

Writes bench/results/rate_limit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from bench.results_file import save_result
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.standin import PACES, pace_config
from devtools.standin_control import StandinControl
from models.enums import Tier
from service import batches
from service.job_outcome import job_outcome
from worker import build_workers

PERSONAS = ["David Chen", "Maria Gonzalez", "Priya Patel", "James Okafor"]
ARCS = ["Couple Conflict -> Alignment", "Anxiety -> Confidence", "Confusion -> Clarity", "Grief -> Acceptance"]
TOPICS = ["Essential Estate Planning", "Retirement Income Planning", "Paying Down Debt", "College Savings Plans"]


async def run_phase(settings: Settings, standin: StandinControl, standin_config: dict, samples: int | None = None) -> dict:
    """One job of the 64 catalog combinations; or, given samples, that many of one combination."""
    await standin.reset()
    await standin.configure(**standin_config)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    client = await connect(settings)
    storage = Storage(settings)
    async with AsyncExitStack() as running:
        for worker in build_workers(client, settings, sessions, storage, create_claude_client(settings)):
            await running.enter_async_context(worker)
        catalog = {"personas": PERSONAS, "arcs": ARCS, "topics": TOPICS} if samples is None else {
            "personas": PERSONAS[:1], "arcs": ARCS[:1], "topics": TOPICS[:1], "samples": samples
        }
        request = batches.LaunchRequest(**catalog, tier=Tier.TEMPLATE, concurrency=32)
        await until_workers_poll(client, settings)
        started, launched_at, cpu_before = time.monotonic(), time.time(), time.process_time()
        job = await batches.launch(sessions, client, settings, request)
        await job_outcome(client.get_workflow_handle(job.workflow_id))
        wall_s = time.monotonic() - started
        worker_cpu_s = time.process_time() - cpu_before
    status = await batches.job_status(sessions, str(job.job_id), client)
    await engine.dispose()
    stats = await standin.stats()
    times = sorted(entry["at"] for entry in stats["log"])
    span_min = (times[-1] - times[0]) / 60
    busiest_minute = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    return {
        "standin": standin_config,
        "items": status.total,
        "successful": status.successful,
        "requests": stats["requests"],
        "by_outcome": stats["by_outcome"],
        "wall_time_s": round(wall_s, 1),
        # The fixed costs: launch to the first call, the last call to the job's end.
        "first_call_after_launch_s": round(times[0] - launched_at, 2),
        "end_after_last_call_s": round(launched_at + wall_s - times[-1], 2),
        # The workers' CPU (they run in this process): what the engine costs besides the server's.
        "worker_cpu_s_per_item": round(worker_cpu_s / status.total, 3),
        "achieved_calls_per_minute": round((len(times) - 1) / span_min, 1) if span_min else None,
        "busiest_60s_window_requests": busiest_minute,
    }


async def until_workers_poll(client: Client, settings: Settings) -> None:
    """A deployed worker polls long before a job is launched, as the peers' code is loaded before
    their clocks start: the first call is timed from the launch, not from a worker's start-up."""
    queues = [
        (settings.task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (settings.task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        (settings.claude_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    deadline = time.monotonic() + 30
    for name, kind in queues:
        request = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=name), task_queue_type=kind)
        while not (await client.workflow_service.describe_task_queue(request)).pollers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker polls {name} after 30 s")
            await asyncio.sleep(0.05)


def engine_settings(env: dict[str, str], calls_per_minute: float) -> Settings:
    """The engine as benchmarked: on the stack's stand-in, fresh task queues, at this limit."""
    return devstack.standin_settings(
        env,
        claude_calls_per_minute=calls_per_minute,
        claude_max_attempts=20,
        claude_retry_base_s=1.0,
    )


async def main(calls_per_minute: float, pace: str, latency_ms: int, standin_rpm: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-bench-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        settings = engine_settings(env, calls_per_minute)
        standin = StandinControl(env["ANTHROPIC_BASE_URL"])
        unlimited = await run_phase(settings, standin, pace_config(pace, latency_ms))
        fresh = settings.model_copy(
            update={"task_queue": f"bench-{uuid.uuid4()}", "claude_task_queue": f"bench-claude-{uuid.uuid4()}"}
        )
        enforced = await run_phase(fresh, standin, {**pace_config(pace, latency_ms), "rpm_limit": standin_rpm})
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "calls_per_minute_setting": calls_per_minute,
        "standin_pace": pace,
        "standin_latency_ms": latency_ms,
        "phase_no_account_limit": {
            **unlimited,
            "achieved_share_of_limit": round(unlimited["achieved_calls_per_minute"] / calls_per_minute, 3),
        },
        "phase_account_limit": {**enforced, "rate_limit_429s": enforced["by_outcome"].get("429_rpm", 0)},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls-per-minute", type=float, default=120)
    parser.add_argument("--pace", choices=sorted(PACES), default="claude", help="how fast the stand-in answers")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every answer")
    parser.add_argument("--standin-rpm", type=int, default=40)
    args = parser.parse_args()
    result = asyncio.run(main(args.calls_per_minute, args.pace, args.latency_ms, args.standin_rpm))
    save_result("rate_limit", result)
