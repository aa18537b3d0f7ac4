"""Benchmark: the same items online and in Message Batches mode, on the real local stack (Temporal
dev server, PostgreSQL, SeaweedFS, the stand-in with prompt caching in both modes): cost per
conversation, Temporal events per item (item, job and Message Batches histories together) and
wall time.

    .venv/bin/python -m bench.batch_mode [--personas 4] [--batch-processing-s 5]

Writes bench/results/batch_mode.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from temporalio.client import Client

from bench.results_file import save_result
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.sample_catalog import EMOTIONAL_ARCS, PERSONAS, TRAINING_TOPICS
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, Tier
from models.tables import BatchItem
from models.workflow_ids import item_workflow_id, job_workflow_id, message_batches_workflow_id
from service import batches
from service.job_outcome import job_outcome
from worker import build_workers


async def events_by_job(client: Client, workflow_owner: dict[str, str]) -> Counter[str]:
    """History events of every run of every workflow, summed per job."""
    events: Counter[str] = Counter()
    async for execution in client.list_workflows():
        owner = workflow_owner.get(execution.id)
        if owner is not None:
            events[owner] += execution.history_length
    return events


async def run_mode(settings: Settings, standin: StandinControl, mode: DeliveryMode, personas: list[str]) -> dict:
    await standin.reset()
    await standin.configure(batch_processing_s=settings.message_batch_poll_initial_s)
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    client = await connect(settings)
    request = batches.LaunchRequest(
        personas=personas, arcs=[arc[0] for arc in EMOTIONAL_ARCS[:2]], topics=[topic[0] for topic in TRAINING_TOPICS[:2]],
        tier=Tier.TEMPLATE, concurrency=16, mode=mode,
    )
    async with AsyncExitStack() as running:
        for worker in build_workers(client, settings, sessions, Storage(settings), create_claude_client(settings)):
            await running.enter_async_context(worker)
        started = time.monotonic()
        job = await batches.launch(sessions, client, settings, request)
        await job_outcome(client.get_workflow_handle(job.workflow_id))
        wall_s = time.monotonic() - started
    status = await batches.job_status(sessions, str(job.job_id), client)
    async with sessions() as session:
        item_ids = (await session.scalars(select(BatchItem.id).where(BatchItem.batch_job_id == job.job_id))).all()
    await engine.dispose()
    owner = {item_workflow_id(i): "items" for i in item_ids}
    owner[job_workflow_id(job.job_id)] = "job"
    owner[message_batches_workflow_id(job.job_id)] = "message_batches"
    events = await events_by_job(client, owner)
    stats = await standin.stats()
    return {
        "items": status.total,
        "successful": status.successful,
        "wall_time_s": round(wall_s, 1),
        "cost_usd": status.cost_usd,
        "cost_per_conversation_usd": round(status.cost_usd / status.successful, 8) if status.successful else None,
        "cache_hit_rate": status.cache_hit_rate,
        "events_per_item": round(sum(events.values()) / status.total, 1),
        "events": dict(events),
        "online_requests": stats["requests"],
        "batches": stats["batches"],
        "batch_requests": stats["batch_requests"],
    }


async def main(personas: int, batch_processing_s: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-bench-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        settings = devstack.standin_settings(
            env,
            claude_calls_per_minute=6000,
            claude_max_concurrent_calls=16,
            message_batch_gather_s=1.0,
            message_batch_poll_initial_s=batch_processing_s,
            message_batch_poll_max_s=batch_processing_s * 2,
        )
        standin = StandinControl(env["ANTHROPIC_BASE_URL"])
        chosen = [persona[0] for persona in PERSONAS[:personas]]
        online = await run_mode(settings, standin, DeliveryMode.ONLINE, chosen)
        batch = await run_mode(settings, standin, DeliveryMode.BATCH, chosen)
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "standin_batch_processing_s": batch_processing_s,
        "online": online,
        "batch": batch,
        "batch_cost_share_of_online": round(batch["cost_usd"] / online["cost_usd"], 3) if online["cost_usd"] else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", type=int, default=4, help="items = personas x 2 arcs x 2 topics")
    parser.add_argument("--batch-processing-s", type=float, default=5.0)
    args = parser.parse_args()
    save_result("batch_mode", asyncio.run(main(args.personas, args.batch_processing_s)))
