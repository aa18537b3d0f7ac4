"""A worker stopped with SIGTERM lets its in-flight Claude call finish: `python worker.py` as a
deployment runs it, against the real stack and the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.claude_client import create_claude_client
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, Tier
from models.tables import BatchItem
from service import batches
from tests.conftest import REPO
from tests.helpers import eventually
from worker import build_workers

CALL_S = 4.0


async def test_sigterm_lets_the_in_flight_claude_call_finish(
    stack: dict[str, str],
    stack_settings: Settings,
    stack_client: Client,
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
) -> None:
    settings = stack_settings.model_copy(
        update={"task_queue": f"shutdown-{uuid.uuid4()}", "claude_task_queue": f"shutdown-claude-{uuid.uuid4()}"}
    )
    env = {key: value for key, value in os.environ.items() if key != "ANTHROPIC_API_KEY"}
    env |= stack | {
        "TASK_QUEUE": settings.task_queue,
        "CLAUDE_TASK_QUEUE": settings.claude_task_queue,
        "BRIGHTRUN_STACK_ENV_FILE": os.devnull,
        "LOG_FORMAT": "json",
    }
    await standin.configure(latency_ms=int(CALL_S * 1000))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        job = await batches.launch(
            sessions, stack_client, settings,
            batches.LaunchRequest(personas=["David Chen"], arcs=["Anxiety -> Confidence"], topics=["Paying Down Debt"],
                                  tier=Tier.TEMPLATE),
        )
        await eventually(lambda: _requests(standin), "the worker's call reached the stand-in", timeout_s=60)
        worker.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=60)
    finally:
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            await worker.wait()

    assert worker.returncode == 0, output.decode()[-2000:]
    assert time.monotonic() - stopping >= CALL_S / 2, "the worker waited for its call"
    assert b"claude call succeeded" in output and b"worker stopped" in output
    # Another worker finishes the item: the call is not made again.
    async with contextlib.AsyncExitStack() as running:
        for replacement in build_workers(stack_client, settings, sessions, storage, create_claude_client(settings)):
            await running.enter_async_context(replacement)
        await stack_client.get_workflow_handle(job.workflow_id).result()
    async with sessions() as session:
        item = await session.scalar(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))
    assert item.status == ItemStatus.COMPLETED, item.error_message
    assert (await standin.stats())["requests"] == 1


async def _requests(standin: StandinControl) -> int:
    return (await standin.stats())["requests"]
