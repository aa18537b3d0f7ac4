"""Benchmark: a small job launched behind 300 items in flight finishes in seconds, on the real
local stack (Temporal dev server with fairness, PostgreSQL, SeaweedFS, the stand-in with 2 s
calls) at 120 calls/min. A job holds at most 100 items in flight (--concurrency 1-100), so the
300 are three jobs of 100: each has its own fairness key, and the small job gets a quarter of
the calls while all four have calls waiting (a single 300-item job would leave it half).

    .venv/bin/python -m bench.fair_sharing [--calls-per-minute 120] [--latency-ms 2000] [--small-items 4]

Writes bench/results/fair_sharing.json.
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

from bench.rate_limit import ARCS, PERSONAS, TOPICS, engine_settings
from bench.results_file import save_result
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.standin_control import StandinControl
from models.enums import Tier
from service import batches
from worker import build_workers
from workflows.batch_job import BatchJobWorkflow

BIG_JOBS, BIG_JOB_ITEMS, BIG_JOB_CONCURRENCY = 3, 100, 100


def _job(samples: int, concurrency: int, name: str) -> batches.LaunchRequest:
    return batches.LaunchRequest(
        personas=PERSONAS[:1], arcs=ARCS[:1], topics=TOPICS[:1], tier=Tier.TEMPLATE,
        samples=samples, concurrency=concurrency, name=name,
    )  # fmt: skip


async def measure(calls_per_minute: float, latency_ms: int, small_items: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-fair-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        settings = engine_settings(env, calls_per_minute).model_copy(update={"claude_max_concurrent_calls": 32})
        standin = StandinControl(env["ANTHROPIC_BASE_URL"])
        await standin.reset()
        await standin.configure(latency_ms=latency_ms)
        engine = create_engine(settings)
        sessions = create_sessionmaker(engine)
        client = await connect(settings)
        async with AsyncExitStack() as running:
            for worker in build_workers(client, settings, sessions, Storage(settings), create_claude_client(settings)):
                await running.enter_async_context(worker)
            big = [
                await batches.launch(sessions, client, settings, _job(BIG_JOB_ITEMS, BIG_JOB_CONCURRENCY, f"big-{n}"))
                for n in range(BIG_JOBS)
            ]
            in_flight = 0
            while in_flight < BIG_JOBS * BIG_JOB_ITEMS:
                await asyncio.sleep(0.5)
                progress = [await client.get_workflow_handle(j.workflow_id).query(BatchJobWorkflow.progress) for j in big]
                in_flight = sum(p.in_flight for p in progress)
            calls_before = (await standin.stats())["requests"]
            launched_at = time.time()
            small = await batches.launch(sessions, client, settings, _job(small_items, small_items, "small"))
            await client.get_workflow_handle(small.workflow_id).result()
            small_s = time.time() - launched_at
            stats = await standin.stats()
            calls_meanwhile = stats["requests"] - calls_before
            big_waiting = BIG_JOBS * BIG_JOB_ITEMS - calls_before
            for job in big:
                await client.get_workflow_handle(job.workflow_id).result()
        await engine.dispose()
        small_status = await _status(settings, small.job_id)
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "calls_per_minute_setting": calls_per_minute,
        "standin_latency_ms": latency_ms,
        "big_jobs": BIG_JOBS,
        "big_job_items_in_flight_each": BIG_JOB_CONCURRENCY,
        "big_jobs_calls_not_yet_made_at_launch": big_waiting,
        "small_job_items": small_items,
        "small_job_successful": small_status.successful,
        "small_job_seconds_from_launch_to_end": round(small_s, 1),
        "calls_made_meanwhile": calls_meanwhile,
        "first_come_first_served_would_wait_s": round(big_waiting * 60 / calls_per_minute, 1),
    }


async def _status(settings: Settings, job_id: uuid.UUID) -> batches.JobStatusView:
    engine = create_engine(settings)
    try:
        return await batches.job_status(create_sessionmaker(engine), str(job_id), await connect(settings))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls-per-minute", type=float, default=120)
    parser.add_argument("--latency-ms", type=int, default=2000)
    parser.add_argument("--small-items", type=int, default=4)
    args = parser.parse_args()
    save_result("fair_sharing", asyncio.run(measure(args.calls_per_minute, args.latency_ms, args.small_items)))
