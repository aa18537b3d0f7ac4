"""The outage controls of devtools/outage_controls.py on a real stack: each part is really down (its
clients are refused) and then really back, on the same address, with its data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from sqlalchemy import make_url
from temporalio.client import Client, WorkflowExecutionStatus

from brightrun.storage import Storage
from devtools import devstack
from devtools.outage_controls import Outages, WorkerPool
from tests.helpers import eventually


@pytest.fixture(scope="module")
def outages(outage_stack: tuple[Path, dict[str, str]]) -> Outages:
    return Outages(*outage_stack)


@pytest.fixture
def pool(outage_stack: tuple[Path, dict[str, str]]) -> Iterator[WorkerPool]:
    root, env = outage_stack
    workers = WorkerPool(root, {**env, "TASK_QUEUE": f"outage-{uuid.uuid4()}", "CLAUDE_TASK_QUEUE": f"outage-claude-{uuid.uuid4()}"})
    yield workers
    workers.stop()


def postgres_dsn(env: dict[str, str]) -> str:
    return make_url(env["DATABASE_URL"]).set(drivername="postgresql").render_as_string(hide_password=False)


async def test_postgres_is_down_then_back_on_the_same_url_with_its_data(outages: Outages) -> None:
    dsn = postgres_dsn(outages.env)
    connection = await asyncpg.connect(dsn)
    await connection.execute("CREATE TABLE IF NOT EXISTS outage_probe (value text)")
    await connection.execute("INSERT INTO outage_probe VALUES ($1)", written := str(uuid.uuid4()))
    await connection.close()

    outages.stop("postgres")
    assert not outages.is_up("postgres")
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(dsn, timeout=5)

    outages.restart("postgres")
    assert outages.is_up("postgres")
    connection = await asyncpg.connect(dsn)
    assert written in [row["value"] for row in await connection.fetch("SELECT value FROM outage_probe")]
    await connection.close()


async def test_s3_is_down_then_back_on_the_same_endpoint_with_its_objects(outages: Outages) -> None:
    storage = Storage(devstack.standin_settings(outages.env))
    key = f"outage-probe/{uuid.uuid4()}.txt"
    await storage.put_bytes(storage.log_bucket, key, b"still here", "text/plain")

    with outages.down("seaweed"):
        assert not outages.is_up("seaweed")
        with pytest.raises(Exception, match=r"Could not connect|Connection refused|EndpointConnectionError"):
            await storage.get_bytes(storage.log_bucket, key)

    assert outages.is_up("seaweed")
    assert await storage.get_bytes(storage.log_bucket, key) == b"still here"


async def test_temporal_restarts_with_its_workflows(outages: Outages) -> None:
    """Same SQLite file and port: a workflow started before the restart is still running after it."""
    client = await Client.connect(outages.env["TEMPORAL_ADDRESS"])
    handle = await client.start_workflow("OutageProbe", id=f"outage-probe-{uuid.uuid4()}", task_queue=f"nobody-{uuid.uuid4()}")

    outages.stop("temporal")
    assert not outages.is_up("temporal")
    outages.restart("temporal")
    assert outages.is_up("temporal")

    client = await Client.connect(outages.env["TEMPORAL_ADDRESS"])
    described = await client.get_workflow_handle(handle.id).describe()
    assert (described.run_id, described.status) == (handle.result_run_id, WorkflowExecutionStatus.RUNNING)
    await client.get_workflow_handle(handle.id).terminate("probe done")


def test_a_crashed_part_comes_back_too(outages: Outages) -> None:
    with outages.down("postgres", crash=True):
        assert not outages.is_up("postgres")
    assert outages.is_up("postgres")


def test_down_restarts_the_part_when_the_block_fails(outages: Outages) -> None:
    with pytest.raises(RuntimeError, match="the block failed"), outages.down("temporal"):
        raise RuntimeError("the block failed")
    assert outages.is_up("temporal")


def test_only_servers_have_outages(outages: Outages) -> None:
    with pytest.raises(ValueError, match="unknown part 'standin'"):
        outages.stop("standin")


async def test_worker_pool_kills_and_churns_real_worker_processes(pool: WorkerPool) -> None:
    first = pool.start(4)
    assert len(pool.running()) == 4 and all(psutil.pid_exists(pid) for pid in first)

    killed, started = pool.churn(0.25)
    assert killed == first[:1] and len(started) == 1
    assert sorted(pool.running().values()) == sorted([*first[1:], *started])
    await eventually(lambda: not psutil.pid_exists(first[0]), "the churned worker is gone")

    assert sorted(pool.kill()) == sorted([*first[1:], *started])
    assert pool.running() == {}
    await eventually(lambda: not any(map(psutil.pid_exists, [*first, *started])), "every worker is gone")

    # start() returns only once the new worker polls its task queue: really back.
    assert len(pool.start(1)) == 1 and len(pool.running()) == 1
