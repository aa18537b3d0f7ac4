"""starter.py as a person runs it: a subprocess against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from models.tables import BatchItem, BatchJob
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cli_env(stack: dict[str, str], stack_settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    queues = {"TASK_QUEUE": stack_settings.task_queue, "CLAUDE_TASK_QUEUE": stack_settings.claude_task_queue}
    return {**env, **stack, **queues, "LOG_FORMAT": "console"}


def starter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "starter.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


async def _counts(sessions: async_sessionmaker) -> tuple[int, int]:
    async with sessions() as session:
        return (await session.scalar(select(func.count()).select_from(BatchJob)),
                await session.scalar(select(func.count()).select_from(BatchItem)))


def test_catalog_lists_the_sample_rows_with_ids(cli_env: dict[str, str]) -> None:
    result = starter(cli_env, "catalog", "--json")
    assert result.returncode == 0, result.stderr
    catalog = json.loads(result.stdout)
    assert "David Chen" in [p["name"] for p in catalog["personas"]]
    assert {"name": "Couple Conflict -> Alignment", "arc_type": "conflict_resolution"}.items() <= next(
        a for a in catalog["emotional_arcs"] if a["name"] == "Couple Conflict -> Alignment"
    ).items()
    assert "Essential Estate Planning" in [t["name"] for t in catalog["training_topics"]]
    assert all(t["id"] and t["tier"] for t in catalog["prompt_templates"])


LAUNCH = ["launch", "--persona", "David Chen", "--arc", "Couple Conflict -> Alignment",
          "--topic", "Essential Estate Planning", "--tier", "template"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["launch", "--persona", "Nobody", "--persona", "David Chen", "--arc", "Couple Conflict -> Alignment",
          "--topic", "Essential Estate Planning", "--tier", "template"], "unknown persona 'Nobody'"),
        ([*LAUNCH, "--template", "not-a-uuid"], "template id 'not-a-uuid' is not a valid UUID"),
        ([*LAUNCH, "--template", "6b0d5f7e-1111-4222-8333-944445555666"], "unknown or inactive prompt template"),
        ([*LAUNCH, "--concurrency", "500"], "--concurrency must be between 1 and 100"),
        ([*LAUNCH, "--user", "../etc"], "user '../etc' must be"),
        (["status", "0b7a8c44-0000-4000-8000-000000000000"], "job 0b7a8c44-0000-4000-8000-000000000000 not found"),
        (["status", "nope"], "job id 'nope' is not a valid UUID"),
    ],
)
async def test_bad_input_gets_one_clear_line_a_nonzero_exit_and_creates_nothing(
    cli_env: dict[str, str], sessions: async_sessionmaker, args: list[str], message: str
) -> None:
    before = await _counts(sessions)

    result = starter(cli_env, *args)

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert message in result.stderr
    assert await _counts(sessions) == before


@pytest.mark.usefixtures("pipeline_worker")
async def test_launch_json_then_status_json(cli_env: dict[str, str], stack_client: Client) -> None:
    launched = starter(cli_env, *LAUNCH, "--persona", "James Okafor", "--name", "cli test", "--json")
    assert launched.returncode == 0, launched.stderr
    job = json.loads(launched.stdout)
    assert job["workflow_id"] == f"batch-job-{job['job_id']}"

    await stack_client.get_workflow_handle(job["workflow_id"]).result()
    result = starter(cli_env, "status", job["job_id"], "--json")

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {"status": "completed", "total": 2, "completed": 2, "successful": 2, "failed": 0, "cancelled": 0,
            "remaining": 0, "eta_seconds": 0.0}.items() <= status.items()
    assert status["input_tokens"] > 0 and status["output_tokens"] > 0 and "cost_usd" in status
