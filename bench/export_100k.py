"""Benchmark: exports of 10,000 and 100,000 conversations through the real ExportWorkflow, its
activities, PostgreSQL and S3 (an isolated local stack), measuring the wall time and the peak
memory (RSS) of the process that runs the worker, and the export workflow's history length.
Memory that stays flat from 10,000 to 100,000 shows the export streams.

    .venv/bin/python -m bench.export_100k [--sizes 10000 100000] [--page-size 500]

The conversation rows are inserted in bulk; their final files are 200 distinct documents that the
rows share (each row is still read from S3 and written as its own line). Writes
bench/results/export_100k.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import psutil
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.worker import Worker

from activities.export import ExportActivities
from bench.results_file import save_result
from brightrun.db import create_engine, create_sessionmaker
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.load_catalog import catalog_id
from models.enums import JobStatus, ReviewStatus
from models.tables import BatchJob
from service.export import ExportRequest, export
from service.review import Owner
from tests.conversations import ARC, PERSONA, TEMPLATE, TOPIC, dialogue
from workflows.export import ExportWorkflow, export_workflow_id

DISTINCT_DOCUMENTS = 200

_INSERT_ROWS = text(
    """
    INSERT INTO conversations (conversation_id, batch_job_id, created_by, title, raw_storage_path,
        final_storage_path, persona_id, emotional_arc_id, training_topic_id, template_id, tier,
        turn_count, quality_score, review_status, generation_metadata)
    SELECT gen_random_uuid(), :job_id, :user, 'bench', 'raw/bench/raw.json',
        :prefix || (g % :documents) || '.json', :persona, :arc, :topic, :template, 'template',
        8, 0.9, :approved, '{"model": "claude-sonnet-4-6"}'::jsonb
    FROM generate_series(1, :count) AS g
    """
)


class PeakMemory:
    """Samples the process's RSS every 50 ms while running."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> Self:
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def arrange(sessions: async_sessionmaker[AsyncSession], storage: Storage, user: str, count: int) -> uuid.UUID:
    prefix = f"raw/{user}/doc-"
    for n in range(DISTINCT_DOCUMENTS):
        document = {"quality": {"turns": 1.0}, "title": "t", "metadata": {}, "turns": dialogue(f"doc{n}", turns=8)}
        await storage.put_json(storage.conversation_bucket, f"{prefix}{n}.json", document)
    async with sessions.begin() as session:
        job_id = (
            await session.scalars(
                insert(BatchJob)
                .values(name="export bench", status=JobStatus.COMPLETED.value, tier="template", created_by=user, total_items=count)
                .returning(BatchJob.id)
            )
        ).one()
        await session.execute(
            _INSERT_ROWS,
            {
                "job_id": job_id, "user": user, "prefix": prefix, "documents": DISTINCT_DOCUMENTS, "count": count,
                "persona": catalog_id("persona", PERSONA), "arc": catalog_id("arc", ARC),
                "topic": catalog_id("topic", TOPIC), "template": catalog_id("template", TEMPLATE),
                "approved": ReviewStatus.APPROVED.value,
            },
        )
    return job_id


async def run(sizes: list[int], page_size: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="brightrun-export-bench-"))
    try:
        env = devstack.start(devstack.isolated_config(root))
        settings = devstack.standin_settings(env, export_page_size=page_size)
        engine = create_engine(settings)
        sessions = create_sessionmaker(engine)
        storage = Storage(settings)
        client = await connect(settings)
        activities = ExportActivities(sessions, storage, page_size)
        runs = []
        async with Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[ExportWorkflow],
            activities=[activities.plan_export, activities.write_export_page, activities.finish_export, activities.fail_export],
        ):
            for count in sizes:
                user = f"bench-{count}"
                job_id = await arrange(sessions, storage, user, count)
                out = root / "exports" / str(count)
                request = ExportRequest(owner=Owner.of(user), out=str(out), jobs=(str(job_id),),
                                        split="train=0.9,validation=0.1", seed=1, allow_stand_in=True)
                started = time.monotonic()
                with PeakMemory() as memory:
                    before = memory.peak
                    result = await export(sessions, client, settings, request)
                wall_s = time.monotonic() - started
                history = await client.get_workflow_handle(export_workflow_id(result.export_id)).fetch_history()
                sizes_on_disk = {path: (out / path).stat().st_size for path in result.files}
                runs.append({
                    "conversations": count,
                    "exported": result.count,
                    "splits": result.splits,
                    "wall_time_s": round(wall_s, 1),
                    "conversations_per_second": round(count / wall_s, 1),
                    "rss_before_mb": round(before / 2**20, 1),
                    "rss_peak_mb": round(memory.peak / 2**20, 1),
                    "rss_growth_mb": round((memory.peak - before) / 2**20, 1),
                    "export_history_events": len(history.events),
                    "file_bytes": sizes_on_disk,
                })
                print(runs[-1])
        await engine.dispose()
    finally:
        devstack.stop(root)
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "page_size": page_size,
        "note": "RSS of the one process running the worker (and the starter's call); the stack runs in other processes",
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()
    save_result("export_100k", asyncio.run(run(args.sizes, args.page_size)))


if __name__ == "__main__":
    main()
