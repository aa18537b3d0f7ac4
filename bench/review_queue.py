"""Benchmark: the review workspace's pages and API with 100,000 conversations in the database,
through `python -m web` on an isolated local stack (real PostgreSQL, S3, Temporal), measured one
request at a time as a reviewer clicks: p50, p95 and max of each page. The issue's target is
<= 150 ms p95 for the review queue and the lists.

    .venv/bin/python -m bench.review_queue [--conversations 100000] [--requests 200]

The conversations belong to one reviewer, in four jobs, a third approved, a third rejected, a
third pending, one in twenty a near-duplicate, quality spread over 0..1; their final files are
200 distinct documents the rows share (the queue still reads each one from S3). Another user's
20,000 conversations sit beside them. Writes bench/results/review_queue.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy import insert, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.results_file import save_result
from brightrun.db import create_engine, create_sessionmaker
from brightrun.storage import Storage
from devtools import devstack
from devtools.load_catalog import catalog_id
from models.enums import JobStatus, UserRole
from models.tables import BatchJob, Conversation
from service import users
from tests.conversations import ARC, PERSONA, TEMPLATE, TOPIC, dialogue
from tests.workspace import browser, sign_in

DISTINCT_DOCUMENTS = 200
JOBS = 4
OTHER_USERS_CONVERSATIONS = 20_000
TARGET_P95_MS = 150.0

_INSERT_ROWS = text(
    """
    INSERT INTO conversations (conversation_id, batch_job_id, created_by, title, raw_storage_path,
        final_storage_path, persona_id, emotional_arc_id, training_topic_id, template_id, tier,
        turn_count, quality_score, review_status, near_duplicate, created_at, generation_metadata)
    SELECT gen_random_uuid(), :job_id, :user, 'bench ' || g, 'raw/bench/raw.json',
        :prefix || (g % :documents) || '.json', :persona, :arc, :topic, :template, 'template',
        8, (g * 7919 % 1000) / 1000.0,
        (ARRAY['approved', 'rejected', 'pending_review'])[g % 3 + 1], g % 20 = 0,
        now() - (:count - g) * interval '1 second', '{"model": "claude-sonnet-4-6"}'::jsonb
    FROM generate_series(1, :count) AS g
    """
)


async def _arrange_user(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, user: str, count: int, jobs: int
) -> list[uuid.UUID]:
    prefix = f"raw/{user}/doc-"
    for n in range(DISTINCT_DOCUMENTS):
        document = {"quality": {"turns": 1.0}, "title": "t", "metadata": {}, "turns": dialogue(f"doc{n}", turns=8)}
        await storage.put_json(storage.conversation_bucket, f"{prefix}{n}.json", document)
    job_ids = []
    async with sessions.begin() as session:
        for j in range(jobs):
            job_id = (
                await session.scalars(
                    insert(BatchJob)
                    .values(name=f"queue bench {j}", status=JobStatus.COMPLETED.value, tier="template", created_by=user,
                            total_items=count // jobs, completed_items=count // jobs)
                    .returning(BatchJob.id)
                )
            ).one()
            await session.execute(
                _INSERT_ROWS,
                {
                    "job_id": job_id, "user": user, "prefix": prefix, "documents": DISTINCT_DOCUMENTS,
                    "count": count // jobs, "persona": catalog_id("persona", PERSONA), "arc": catalog_id("arc", ARC),
                    "topic": catalog_id("topic", TOPIC), "template": catalog_id("template", TEMPLATE),
                },
            )
            job_ids.append(job_id)
    return job_ids


async def _measure(client: aiohttp.ClientSession, requests: int, url: Callable[[], str]) -> dict[str, float]:
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        async with client.get(url()) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url()} answered {response.status}")
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
        "max_ms": round(timings[-1], 1),
    }


def _scratch_database() -> str | None:
    """A fresh database on the server DATABASE_URL names (else the stack's embedded PostgreSQL)."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        return None
    return make_url(server).set(database=f"brightrun_bench_{uuid.uuid4().hex[:8]}").render_as_string(hide_password=False)


async def run(conversations: int, requests: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-review-bench-"))
    scratch: str | None = None
    try:
        scratch = _scratch_database()
        config = devstack.isolated_config(root, scratch)
        env = devstack.start(config)
        settings = devstack.standin_settings(env)
        engine = create_engine(settings)
        sessions = create_sessionmaker(engine)
        storage = Storage(settings)
        reviewer, other = f"bench-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
        arranging = time.perf_counter()
        jobs = await _arrange_user(sessions, storage, reviewer, conversations, JOBS)
        await _arrange_user(sessions, storage, other, OTHER_USERS_CONVERSATIONS, 1)
        # What autovacuum does to a table after a bulk insert: statistics and the visibility map
        # (counts over a job's queue index then read no table page).
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE conversations"))
        arranged_s = time.perf_counter() - arranging
        password = users.new_password()
        await users.add_user(sessions, reviewer, UserRole.REVIEWER, password)
        async with sessions() as session:
            sample = list(
                (await session.scalars(select(Conversation.conversation_id).where(Conversation.created_by == reviewer)
                                       .order_by(Conversation.id).limit(2000))).all()
            )
        devstack.start_web(root, {**os.environ, **env, "LOG_LEVEL": "WARNING"}, config.web_port)
        url = devstack.web_url(config.web_port)
        rng = random.Random(7)
        results = {}
        async with browser() as client:
            await sign_in(client, url, reviewer, password)
            pages: dict[str, Callable[[], str]] = {
                "GET /review?job=J (first pending)": lambda: f"{url}/review?job={rng.choice(jobs)}",
                "GET /review?job=J&at=C (anywhere in the job)": lambda: f"{url}/review?job={jobs[0]}&status=&at={rng.choice(sample)}",
                "GET /review?job=J&before=C (previous)": lambda: f"{url}/review?job={jobs[0]}&status=&before={rng.choice(sample)}",
                "GET /review (all jobs, quality 0.4-0.6, near-duplicates)":
                    lambda: f"{url}/review?min_quality=0.4&max_quality=0.6&near_duplicates=1",
                "GET /conversations/C": lambda: f"{url}/conversations/{rng.choice(sample)}",
                "GET /jobs": lambda: f"{url}/jobs",
                "GET /api/jobs": lambda: f"{url}/api/jobs",
            }
            for name, page in pages.items():
                await _measure(client, 5, page)  # warm the connection pools and caches
                results[name] = await _measure(client, requests, page)
        await engine.dispose()
        return {
            "benchmark": "review_queue",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
            "conversations": {"reviewer": conversations, "another_user": OTHER_USERS_CONVERSATIONS, "jobs": JOBS},
            "arrange_s": round(arranged_s, 1),
            # Two cores shared with four other engineers' tests: latency follows the load.
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "requests_each": requests,
            "target_p95_ms": TARGET_P95_MS,
            "pages": results,
            "all_within_target": all(r["p95_ms"] <= TARGET_P95_MS for r in results.values()),
        }
    finally:
        devstack.stop(root)
        if scratch:
            await _drop_database(scratch)


async def _drop_database(url: str) -> None:
    """The scratch database's 120,000 rows go with it."""
    target = make_url(url)
    server = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{target.database}"')
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    save_result("review_queue", asyncio.run(run(args.conversations, args.requests)))


if __name__ == "__main__":
    main()
