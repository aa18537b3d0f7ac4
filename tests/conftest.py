"""Shared test fixtures: one time-skipping Temporal server per session for workflow logic."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.binaries import venv_binary
from devtools.standin import start_standin
from devtools.standin_control import StandinControl
from models import search_attributes
from worker import build_workers

REPO = Path(__file__).resolve().parent.parent

# A test's level follows from the fixtures it uses (directly or through other fixtures), so a new
# test is grouped without anyone remembering a decorator: `pytest -m unit` runs in seconds.
_LEVEL_BY_FIXTURE = (
    ("outage_stack", pytest.mark.chaos),
    ("stack", pytest.mark.integration),
    ("own_stack", pytest.mark.integration),
    ("time_skipping_env", pytest.mark.workflow),
    ("own_time_skipping_env", pytest.mark.workflow),
    ("own_ts_client", pytest.mark.workflow),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        level = next((mark for fixture, mark in _LEVEL_BY_FIXTURE if fixture in fixtures), pytest.mark.unit)
        item.add_marker(level)


async def register_search_attributes(client: Client) -> None:
    """The time-skipping server knows no custom search attribute until it is registered."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in search_attributes.ALL},
        )
    )


@contextlib.asynccontextmanager
async def _time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    async with _time_skipping_server() as env:
        yield env


@pytest.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Like own_ts_client, for a test that also sleeps on the server's clock."""
    async with _time_skipping_server() as env:
        yield env


@pytest.fixture
async def own_ts_client() -> AsyncIterator[Client]:
    """A time-skipping server of the test's own, for a test that skips hours: workflows other
    tests left open on the shared one (continued-as-new jobs, abandoned activities) stop it from
    skipping time."""
    async with _time_skipping_server() as env:
        yield env.client


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def ts_client(time_skipping_env: WorkflowEnvironment) -> Client:
    return time_skipping_env.client


# --- a stand-in of a test's own, driven by the real SDK ----------------------------------


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, port = await start_standin(port=0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def claude(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0) as client:
        yield client


@pytest.fixture
def control(base_url: str) -> StandinControl:
    return StandinControl(base_url)


# --- the real local stack, shared by every pipeline test of the session -------------------


def _scratch_database(server_url: str) -> str:
    """A fresh database on the server DATABASE_URL names, so tests never touch its data."""
    url = make_url(server_url).set(database=f"brightrun_test_{uuid.uuid4().hex[:8]}")
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("stack")
    server_url = os.environ.get("DATABASE_URL")
    config = devstack.isolated_config(root, _scratch_database(server_url) if server_url else None)
    try:
        yield devstack.start(config)
    finally:
        devstack.stop(root)


@pytest.fixture(scope="session")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A second stack, with embedded PostgreSQL, whose parts the outage and chaos tests stop and
    restart: the shared `stack` never sees an outage. Yields its root and env."""
    root = tmp_path_factory.mktemp("outage-stack")
    try:
        yield root, devstack.start(devstack.isolated_config(root))
    finally:
        devstack.stop(root)


@pytest.fixture(scope="session")
def stack_settings(stack: dict[str, str]) -> Settings:
    return devstack.standin_settings(
        stack,
        claude_calls_per_minute=6000,
        claude_retry_base_s=0.2,
        claude_retry_cap_s=1.0,
        # 30% injected faults must not exhaust an item's attempts by chance (0.3^10 per item).
        claude_max_attempts=10,
        # Message Batches end in seconds at the stand-in: gather and poll at that pace.
        message_batch_gather_s=0.3,
        message_batch_poll_initial_s=0.3,
        message_batch_poll_max_s=1.0,
        # Tests stop and restart workers as a crash would; tests/test_worker_shutdown.py runs
        # worker.py with the graceful default.
        worker_shutdown_grace_s=0,
        # An item workflow that ends unreported (terminated, say) is found within seconds.
        unreported_check_s=5,
    )


@pytest.fixture(scope="module")
def cli_env(stack: dict[str, str], stack_settings: Settings) -> dict[str, str]:
    """The environment of a `starter.py` run against the test stack (the stand-in, not Claude)."""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    queues = {"TASK_QUEUE": stack_settings.task_queue, "CLAUDE_TASK_QUEUE": stack_settings.claude_task_queue}
    return {**env, **stack, **queues, "LOG_FORMAT": "console"}


@pytest.fixture(scope="session")
async def sessions(stack_settings: Settings) -> AsyncIterator[async_sessionmaker]:
    engine = create_engine(stack_settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def storage(stack_settings: Settings) -> Storage:
    return Storage(stack_settings)


@pytest.fixture(scope="session")
async def stack_client(stack_settings: Settings) -> Client:
    return await connect(stack_settings)


@pytest.fixture(scope="session")
async def pipeline_worker(
    stack_client: Client, stack_settings: Settings, sessions: async_sessionmaker, storage: Storage
) -> AsyncIterator[None]:
    """The real workers, with the real activities, on the real dev server."""
    claude = create_claude_client(stack_settings)
    async with contextlib.AsyncExitStack() as running:
        for worker in build_workers(stack_client, stack_settings, sessions, storage, claude):
            await running.enter_async_context(worker)
        yield


@pytest.fixture
async def standin(stack_settings: Settings) -> AsyncIterator[StandinControl]:
    assert stack_settings.anthropic_base_url is not None
    control = StandinControl(stack_settings.anthropic_base_url)
    await control.reset()
    yield control
    await control.reset()


@pytest.fixture(scope="session")
def workspace_url(tmp_path_factory: pytest.TempPathFactory, stack: dict[str, str], stack_settings: Settings) -> Iterator[str]:
    """The review workspace (`python -m web`, as `make up` starts it) on the shared stack."""
    root = tmp_path_factory.mktemp("workspace")
    for part_dir in ("pids", "logs"):
        (root / part_dir).mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    queues = {"TASK_QUEUE": stack_settings.task_queue, "CLAUDE_TASK_QUEUE": stack_settings.claude_task_queue}
    port = devstack.free_port()
    devstack.start_web(root, {**env, **stack, **queues, "LOG_FORMAT": "json"}, port)
    try:
        yield devstack.web_url(port)
    finally:
        devstack.stop(root)
