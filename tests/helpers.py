"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from service import batches
from brightrun.settings import Settings


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll a condition until it holds (never a fixed sleep in place of the condition)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await _holds(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def _holds(condition: Callable[[], object]) -> bool:
    result = condition()
    return bool(await result) if asyncio.iscoroutine(result) else bool(result)


async def launch_and_wait(
    sessions: async_sessionmaker, client: Client, settings: Settings, **request
) -> batches.LaunchedJob:  # noqa: ANN003
    job = await batches.launch(sessions, client, settings, batches.LaunchRequest(**request))
    await client.get_workflow_handle(job.workflow_id).result()
    return job
