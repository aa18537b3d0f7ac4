"""starter.py as a person runs it: a subprocess against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, make_url, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.devstack import free_port
from models.enums import ItemStatus, JobStatus, ReviewStatus, Tier
from models.messages import BatchItemInput, JobProgress
from models.tables import BatchItem, BatchJob
from models.workflow_ids import item_workflow_id, job_workflow_id
from service import batches
from service.job_outcome import job_outcome
from tests.conftest import REPO
from tests.conversations import approved_conversation_without_its_final_file, dialogue, new_conversation, new_job
from tests.helpers import eventually
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow


def starter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "starter.py", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
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
        ([*LAUNCH, "--concurrency", "10001"], "--concurrency must be between 1 and 10000"),
        ([*LAUNCH, "--user", "../etc"], "user '../etc' must be"),
        ([*LAUNCH, "--concurrency", "0"], "--concurrency must be between 1 and 10000, got 0"),
        ([*LAUNCH, "--name", "n" * 5000], "--name must be 1 to 200 characters, got 5000"),
        ([*LAUNCH, "--persona", "David Chen"], "persona 'David Chen' is given twice"),
        ([*LAUNCH, "--priority", "6"], "--priority must be between 1 (first) and 5 (last), got 6"),
        ([*LAUNCH, "--samples", "0"], "--samples must be between 1 and 1000, got 0"),
        ([*LAUNCH, "--samples", "1001"], "--samples must be between 1 and 1000, got 1001"),
        ([*LAUNCH, "--persona", "James Okafor", "--samples", "1000", "--arc", "Grief -> Acceptance",
          "--topic", "Paying Down Debt", "--persona", "Maria Gonzalez", "--arc", "Anxiety -> Confidence",
          "--topic", "Retirement Income Planning"],
         "27 combinations x 1000 samples = 27000 items, more than the 20000 a job may have"),
        (["jobs", "--user", "a/b"], "user 'a/b' must be"),
        (["status", "0b7a8c44-0000-4000-8000-000000000000"], "job 0b7a8c44-0000-4000-8000-000000000000 not found"),
        (["status", "nope"], "job id 'nope' is not a valid UUID"),
        (["pause", "0b7a8c44-0000-4000-8000-000000000000", "--wait", "nan"],
         "--wait must be between 0 and 86400 seconds, got nan"),
        (["cancel", "0b7a8c44-0000-4000-8000-000000000000", "--wait", "-1"],
         "--wait must be between 0 and 86400 seconds, got -1.0"),
        (["watch", "0b7a8c44-0000-4000-8000-000000000000", "--interval", "0"],
         "--interval must be between 0.2 and 3600 seconds, got 0.0"),
        (["jobs", "--limit", "100000000000000000000"], "--limit must be between 1 and 10000, got 100000000000000000000"),
        ([*LAUNCH, "--name", "   "], "--name must be 1 to 200 characters, got 0"),
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


@pytest.mark.parametrize(
    ("args", "env", "code", "line"),
    [
        ([*LAUNCH[:-1], "bogus"], {}, 2, "error: --tier: 'bogus' is not one of 'template', 'scenario', 'edge_case'."),
        (["launch", "--persona", "David Chen"], {}, 2, "error: Missing option '--arc'."),
        (["launch", "--persona", "David Chen", "--arc", "a", "--topic", "t"], {}, 2,
         "error: Missing option '--tier'. Choose from: template, scenario, edge_case"),
        (["jobs", "--limit", "many"], {}, 2, "error: --limit: Input should be a valid integer, unable to parse string as an integer"),
        (["catalog"], {"DATABASE_URL": "mysql://x"}, 2,
         "error: DATABASE_URL: must be a postgresql:// URL (postgres:// and postgresql+asyncpg:// work too)"),
    ],
    ids=["bad-choice", "missing-option", "missing-choice", "not-an-integer", "malformed-setting"],
)
def test_a_usage_or_settings_error_is_one_line_before_anything_is_reached(
    args: list[str], env: dict[str, str], code: int, line: str
) -> None:
    result = starter({**os.environ, **env}, *args)

    assert (result.returncode, result.stderr, result.stdout) == (code, line + "\n", "")


@pytest.mark.usefixtures("pipeline_worker")
async def test_launch_json_then_status_json(cli_env: dict[str, str], stack_client: Client) -> None:
    launched = starter(cli_env, *LAUNCH, "--persona", "James Okafor", "--name", "cli test", "--json")
    assert launched.returncode == 0, launched.stderr
    job = json.loads(launched.stdout)
    assert job["workflow_id"] == f"batch-job-{job['job_id']}"

    await job_outcome(stack_client.get_workflow_handle(job["workflow_id"]))
    result = starter(cli_env, "status", job["job_id"], "--json")

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {"status": "completed", "total": 2, "completed": 2, "successful": 2, "failed": 0, "cancelled": 0,
            "remaining": 0, "eta_seconds": 0.0}.items() <= status.items()
    assert status["input_tokens"] > 0 and status["output_tokens"] > 0 and "cost_usd" in status


async def test_launch_samples_makes_k_items_per_combination(cli_env: dict[str, str], sessions: async_sessionmaker) -> None:
    launched = starter(cli_env, *LAUNCH, "--persona", "James Okafor", "--samples", "3", "--json")
    assert launched.returncode == 0, launched.stderr
    job = json.loads(launched.stdout)

    assert job["total_items"] == 6
    async with sessions() as session:
        items = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == uuid.UUID(job["job_id"])))).all()
    assert sorted(i.position for i in items) == list(range(6))
    samples = sorted((i.parameters["persona_id"], i.parameters["sample"]) for i in items)
    assert [s for _, s in samples] == [1, 2, 3, 1, 2, 3]


async def test_launch_takes_the_name_without_the_spaces_around_it(cli_env: dict[str, str], sessions: async_sessionmaker) -> None:
    name = "n" * 200  # the longest name a job may have, and two spaces a shell script left after it

    launched = starter(cli_env, *LAUNCH, "--name", f" {name}  ", "--json")

    assert launched.returncode == 0, launched.stderr
    async with sessions() as session:
        assert (await session.get(BatchJob, uuid.UUID(json.loads(launched.stdout)["job_id"]))).name == name


@pytest.mark.usefixtures("pipeline_worker")
async def test_jobs_lists_newest_first_filtered_by_status_and_user(cli_env: dict[str, str], stack_client: Client) -> None:
    user = f"jobs-{uuid.uuid4().hex[:8]}"
    first = json.loads(starter(cli_env, *LAUNCH, "--user", user, "--name", "older", "--json").stdout)
    second = json.loads(starter(cli_env, *LAUNCH, "--user", user, "--name", "newer", "--json").stdout)
    for job in (first, second):
        await job_outcome(stack_client.get_workflow_handle(job["workflow_id"]))

    result = starter(cli_env, "jobs", "--user", user, "--json")

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(j["job_id"], j["name"], j["status"], j["total"], j["completed"]) for j in listed] == [
        (second["job_id"], "newer", "completed", 1, 1),
        (first["job_id"], "older", "completed", 1, 1),
    ]
    assert json.loads(starter(cli_env, "jobs", "--user", user, "--status", "failed", "--json").stdout) == []


def _without_stack(env: dict[str, str]) -> dict[str, str]:
    stack_keys = {"TEMPORAL_ADDRESS", "TEMPORAL_UI_URL", "DATABASE_URL", "S3_ENDPOINT_URL", "ANTHROPIC_BASE_URL"}
    return {k: v for k, v in env.items() if k not in stack_keys}


def test_commands_find_the_local_stack_from_its_env_file(
    cli_env: dict[str, str], stack: dict[str, str], tmp_path: Path
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in stack.items()))

    result = starter({**_without_stack(cli_env), "BRIGHTRUN_STACK_ENV_FILE": str(env_file)}, "catalog", "--json")

    assert result.returncode == 0, result.stderr
    assert "David Chen" in [p["name"] for p in json.loads(result.stdout)["personas"]]


def test_environment_variables_win_over_the_env_file(
    cli_env: dict[str, str], stack: dict[str, str], tmp_path: Path
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"DATABASE_URL={stack['DATABASE_URL']}\n")
    wrong = f"postgresql://postgres@127.0.0.1:{free_port()}/brightrun"

    result = starter({**cli_env, "BRIGHTRUN_STACK_ENV_FILE": str(env_file), "DATABASE_URL": wrong}, "catalog")

    assert result.returncode == 3
    assert "Connect call failed" in result.stderr


@pytest.fixture
async def approved(sessions: async_sessionmaker, storage: Storage) -> tuple[str, uuid.UUID]:
    """A user with one approved conversation: what `review show` and `export` need to reach S3."""
    user = f"ada-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    return user, await new_conversation(sessions, storage, job, user, dialogue("ada"), review_status=ReviewStatus.APPROVED.value)


@pytest.mark.parametrize(
    ("broken", "args", "message"),
    [
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:{port}/brightrun"}, ["catalog"], "Connect call failed"),
        ({"DATABASE_URL": "{missing_database}"}, ["catalog"], 'database "no_such_database" does not exist'),
        ({"TEMPORAL_ADDRESS": "127.0.0.1:{port}"}, ["status", "0b7a8c44-0000-4000-8000-000000000000"], "Failed client connect"),
        ({"BRIGHTRUN_STACK_ENV_FILE": "/nonexistent/env", "DATABASE_URL": None}, ["jobs"], "Is the stack up"),
        ({"S3_ENDPOINT_URL": "http://127.0.0.1:{port}"}, ["review", "show", "{conversation}", "--user", "{user}"], "S3 storage"),
        ({"S3_ENDPOINT_URL": "http://127.0.0.1:{port}"}, ["export", "--user", "{user}", "--out", "{out}"], "S3 storage"),
    ],
    ids=["database-down", "database-missing", "temporal-down", "no-env-file", "s3-down-review-show", "s3-down-export"],
)
def test_an_unreachable_service_gets_one_line_and_exit_3(
    cli_env: dict[str, str], stack: dict[str, str], approved: tuple[str, uuid.UUID], tmp_path: Path,
    broken: dict[str, str | None], args: list[str], message: str,
) -> None:
    missing_database = make_url(stack["DATABASE_URL"]).set(database="no_such_database").render_as_string(False)
    env = dict(cli_env)
    for key, value in broken.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.format(port=free_port(), missing_database=missing_database)
    user, conversation = approved

    result = starter(env, *(arg.format(user=user, conversation=conversation, out=tmp_path / "out") for arg in args))

    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


@pytest.mark.usefixtures("pipeline_worker")
async def test_a_failed_export_gets_one_line_and_exit_1(
    cli_env: dict[str, str], sessions: async_sessionmaker, storage: Storage, tmp_path: Path
) -> None:
    user, key = await approved_conversation_without_its_final_file(sessions, storage)

    result = await asyncio.to_thread(starter, cli_env, "export", "--user", user, "--out", str(tmp_path / "x"))

    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line, no traceback"
    assert result.stderr.startswith("error: export ") and f"the final file {key} is missing" in result.stderr


@pytest.mark.usefixtures("pipeline_worker")
async def test_a_cancel_not_done_in_time_names_the_items_still_to_report_and_exits_4(
    cli_env: dict[str, str], sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings
) -> None:
    job_id, _ = await batches.create_job(
        sessions,
        batches.LaunchRequest(
            personas=["David Chen", "Maria Gonzalez"], arcs=["Couple Conflict -> Alignment"],
            topics=["Essential Estate Planning"], tier=Tier.TEMPLATE,
        ),
    )
    async with sessions() as session:
        stuck = await session.scalar(select(BatchItem).where(BatchItem.batch_job_id == job_id, BatchItem.position == 0))
    # The item's workflow exists already, on a queue no worker polls: it cannot take the cancel.
    stuck_item = await stack_client.start_workflow(
        BatchItemWorkflow.run,
        BatchItemInput(job_id=job_id, item_id=stuck.id, user_id="local-user", parent_workflow_id=job_workflow_id(job_id)),
        id=item_workflow_id(stuck.id),
        task_queue=f"nobody-polls-{uuid.uuid4()}",
    )
    async with sessions() as session:
        await batches.start_job_workflow(stack_client, stack_settings, await session.get(BatchJob, job_id))
    job = stack_client.get_workflow_handle(job_workflow_id(job_id), result_type=JobProgress)
    await eventually(lambda: _in_flight(job, stuck.id), "the job waits for the stuck item")

    cancel = await asyncio.to_thread(starter, cli_env, "cancel", str(job_id), "--wait", "2")

    assert cancel.returncode == 4 and cancel.stdout == ""
    assert cancel.stderr.startswith(f"error: cancel sent, but after 2 s job {job_id} is still processing; ")
    assert f"1 item(s) have not reported yet: item 0 ({stuck.id}, queued)" in cancel.stderr
    # The operator ends the stuck item: the job accounts it and ends cancelled, its counters the rows'.
    await stuck_item.terminate("operator")
    result = await asyncio.wait_for(job_outcome(job), 60)
    async with sessions() as session:
        row = await session.get(BatchJob, job_id)
        statuses = (await session.scalars(select(BatchItem.status).where(BatchItem.batch_job_id == job_id))).all()
    assert row.status == result.status == JobStatus.CANCELLED
    assert (row.failed_items, row.cancelled_items, row.completed_items + row.cancelled_items) == (
        statuses.count(ItemStatus.FAILED), statuses.count(ItemStatus.CANCELLED), 2,
    )


async def _in_flight(job: WorkflowHandle, item_id: uuid.UUID) -> bool:
    return item_id in (await job.query(BatchJobWorkflow.progress)).in_flight_items


@pytest.fixture
async def running_job_that_cannot_answer(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings
) -> AsyncIterator[uuid.UUID]:
    """A processing job with one failed item, whose workflow runs on a queue no worker polls: it
    takes signals but answers no query, as with its worker down or busy."""
    job_id, _ = await batches.create_job(
        sessions,
        batches.LaunchRequest(
            personas=["David Chen", "Maria Gonzalez"], arcs=["Couple Conflict -> Alignment"],
            topics=["Essential Estate Planning"], tier=Tier.TEMPLATE,
        ),
    )
    async with sessions.begin() as session:
        await session.execute(update(BatchItem).where(BatchItem.batch_job_id == job_id, BatchItem.position == 0)
                              .values(status=ItemStatus.FAILED.value, error_message="boom"))
        await session.execute(update(BatchJob).where(BatchJob.id == job_id)
                              .values(status=JobStatus.PROCESSING.value, completed_items=1, failed_items=1))
        job = await session.get(BatchJob, job_id)
    unpolled = stack_settings.model_copy(update={"task_queue": f"nobody-polls-{uuid.uuid4()}"})
    await batches.start_job_workflow(stack_client, unpolled, job)
    yield job_id
    await stack_client.get_workflow_handle(job_workflow_id(job_id)).terminate("test over")


async def _job_rows(sessions: async_sessionmaker, job_id: uuid.UUID) -> tuple[tuple[str, int, int], list[str]]:
    async with sessions() as session:
        job = await session.get(BatchJob, job_id, populate_existing=True)
        items = (await session.scalars(
            select(BatchItem.status).where(BatchItem.batch_job_id == job_id).order_by(BatchItem.position)
        )).all()
    return (job.status, job.completed_items, job.failed_items), list(items)


async def test_retry_of_a_running_job_whose_query_fails_changes_no_row(
    cli_env: dict[str, str], sessions: async_sessionmaker, running_job_that_cannot_answer: uuid.UUID
) -> None:
    job_id = running_job_that_cannot_answer
    before = await _job_rows(sessions, job_id)

    result = await asyncio.to_thread(starter, cli_env, "retry", str(job_id))

    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: job {job_id} is still running; retry it once it has ended\n"
    assert await _job_rows(sessions, job_id) == before == (("processing", 1, 1), ["failed", "queued"])


async def test_pause_of_a_running_job_whose_query_fails_is_sent_and_never_suggests_retry(
    cli_env: dict[str, str], stack_client: Client, running_job_that_cannot_answer: uuid.UUID
) -> None:
    job_id = running_job_that_cannot_answer

    result = await asyncio.to_thread(starter, cli_env, "pause", str(job_id), "--wait", "1")

    assert result.returncode == 4, result.stderr
    assert result.stderr == (
        f"error: pause sent, but after 1 s job {job_id} is still processing; "
        "its workflow does not answer (is a worker running? `make status`)\n"
    )
    history = await stack_client.get_workflow_handle(job_workflow_id(job_id)).fetch_history()
    assert [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events
            if e.HasField("workflow_execution_signaled_event_attributes")] == ["pause"]
