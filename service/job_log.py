"""A job's log (`starter.py log`): its `batch_job_events`, as the lines of `batch-logs/{job}/log.txt`,
read from the database, and followed there until the job ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from models.enums import JobStatus
from models.tables import BatchJob, BatchJobEvent
from service.items import job_id_of

# A line becomes visible when its transaction commits, which can come after a line with a later
# id (two items ending at once). Following re-reads the lines written this recently, so a late
# commit is printed too; a step's transaction lasts seconds, far less than this.
LATE_COMMIT_WINDOW = timedelta(seconds=60)


async def job_log(sessions: async_sessionmaker, job_ref: str) -> list[str]:
    """Every line of the job's log so far, oldest first."""
    async with sessions() as session:
        job_id = await job_id_of(session, job_ref)
        events = (await session.execute(BatchJobEvent.of_job(job_id))).all()
    return [BatchJobEvent.text_line(at, line) for at, line in events]


async def follow_job_log(sessions: async_sessionmaker, job_ref: str, interval_s: float) -> AsyncIterator[str]:
    """The job's lines so far, then each new one as it is written, polled every `interval_s`,
    until the job has ended (its last line, `job <status>`, is written with its end)."""
    async with sessions() as session:
        job_id = await job_id_of(session, job_ref)
    last_id = 0
    printed: set[int] = set()  # of the lines the last poll read: only those can be read again
    while True:
        async with sessions() as session:
            # The status first: a job seen ended has all its lines committed before the read below.
            ended = JobStatus(await session.scalar(select(BatchJob.status).where(BatchJob.id == job_id))).is_final
            events = (
                await session.execute(
                    select(BatchJobEvent.id, BatchJobEvent.created_at, BatchJobEvent.line)
                    .where(
                        BatchJobEvent.batch_job_id == job_id,
                        or_(BatchJobEvent.id > last_id, BatchJobEvent.created_at > func.now() - LATE_COMMIT_WINDOW),
                    )
                    .order_by(BatchJobEvent.id)
                )
            ).all()
        for event_id, at, line in events:
            if event_id not in printed:
                yield BatchJobEvent.text_line(at, line)
        printed = {event_id for event_id, _, _ in events}
        last_id = max(printed | {last_id})
        if ended:
            return
        await asyncio.sleep(interval_s)
