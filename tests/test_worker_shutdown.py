"""A worker that stops while a Claude call runs: stopped with SIGTERM it lets the call finish; lost
(SIGKILL) the item still counts the tokens the call had spent. `python worker.py` as a deployment
runs it, against the real stack and the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator

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
from service.job_outcome import job_outcome
from tests.conftest import REPO
from tests.helpers import claude_call_progress, eventually
from worker import build_workers

CALL_S = 4.0
ONE_ITEM = batches.LaunchRequest(
    personas=["David Chen"], arcs=["Anxiety -> Confidence"], topics=["Paying Down Debt"], tier=Tier.TEMPLATE
)


def own_queues(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(
        update={"task_queue": f"stop-{uuid.uuid4()}", "claude_task_queue": f"stop-claude-{uuid.uuid4()}", **changes}
    )


async def start_worker_process(stack: dict[str, str], settings: Settings) -> asyncio.subprocess.Process:
    """`python worker.py` on the stack, polling the settings' task queues, with the default grace."""
    env = {key: value for key, value in os.environ.items() if key != "ANTHROPIC_API_KEY"}
    env |= stack | {
        "TASK_QUEUE": settings.task_queue,
        "CLAUDE_TASK_QUEUE": settings.claude_task_queue,
        "BRIGHTRUN_STACK_ENV_FILE": os.devnull,
        "LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


@contextlib.asynccontextmanager
async def ended_at_exit(process: asyncio.subprocess.Process) -> AsyncIterator[asyncio.subprocess.Process]:
    try:
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def finish_with_replacement_workers(
    client: Client, settings: Settings, sessions: async_sessionmaker, storage: Storage, job: batches.LaunchedJob
) -> BatchItem:
    async with contextlib.AsyncExitStack() as running:
        for replacement in build_workers(client, settings, sessions, storage, create_claude_client(settings)):
            await running.enter_async_context(replacement)
        await job_outcome(client.get_workflow_handle(job.workflow_id))
    async with sessions() as session:
        return await session.scalar(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))


async def test_sigterm_lets_the_in_flight_claude_call_finish(
    stack: dict[str, str],
    stack_settings: Settings,
    stack_client: Client,
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
) -> None:
    settings = own_queues(stack_settings)
    await standin.configure(latency_ms=int(CALL_S * 1000))
    async with ended_at_exit(await start_worker_process(stack, settings)) as worker:
        job = await batches.launch(sessions, stack_client, settings, ONE_ITEM)
        await eventually(lambda: _requests(standin), "the worker's call reached the stand-in", timeout_s=60)
        worker.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=60)

    assert worker.returncode == 0, output.decode()[-2000:]
    assert time.monotonic() - stopping >= CALL_S / 2, "the worker waited for its call"
    assert b"claude call succeeded" in output and b"worker stopped" in output
    # Another worker finishes the item: the call is not made again.
    item = await finish_with_replacement_workers(stack_client, settings, sessions, storage, job)
    assert item.status == ItemStatus.COMPLETED, item.error_message
    assert (await standin.stats())["requests"] == 1


async def test_a_call_lost_with_its_worker_still_counts_the_tokens_it_had_spent(
    stack: dict[str, str],
    stack_settings: Settings,
    stack_client: Client,
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
) -> None:
    settings = own_queues(stack_settings, claude_max_attempts=1, claude_heartbeat_timeout_s=2.0)
    await standin.configure(first_token_ms=60_000)  # the answer has started: its prompt is paid for
    async with ended_at_exit(await start_worker_process(stack, settings)) as worker:
        job = await batches.launch(sessions, stack_client, settings, ONE_ITEM)
        async with sessions() as session:
            item_id = await session.scalar(select(BatchItem.id).where(BatchItem.batch_job_id == job.job_id))
        await eventually(lambda: _heartbeat_counts_tokens(stack_client, item_id), "the call's tokens are heartbeated", 60)
        worker.kill()
        await worker.wait()

    item = await finish_with_replacement_workers(stack_client, settings, sessions, storage, job)
    assert item.status == ItemStatus.FAILED
    assert item.error_message == (
        "gave up after 1 attempts; the last got no answer within its attempt (it timed out, or its worker was lost)"
    )
    assert item.usage["input_tokens"] > 0 and item.usage["cache_creation_input_tokens"] > 0 and item.usage["cost_usd"] > 0
    status = await batches.job_status(sessions, str(job.job_id), stack_client)
    assert (status.input_tokens, status.cost_usd) == (item.usage["input_tokens"], round(item.usage["cost_usd"], 8))


async def _requests(standin: StandinControl) -> int:
    return (await standin.stats())["requests"]


async def _heartbeat_counts_tokens(client: Client, item_id: uuid.UUID) -> bool:
    progress = await claude_call_progress(client, item_id)
    return progress is not None and progress.usage.input_tokens > 0
