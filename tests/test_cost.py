"""Cost before launch and the budget, on the real stack with the Claude stand-in: `launch
--dry-run` creates nothing, its estimate agrees with what the job then spends, and a job with
`--max-cost` starts no call past its budget (the stand-in's request count is the proof)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anthropic
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.claude_client import create_claude_client
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.devstack import free_port
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, JobStatus, Tier
from models.tables import BatchItem, BatchJob
from models.workflow_ids import job_workflow_id
from service import batches
from service.estimate import JobEstimate, estimate_job, launch_estimated
from tests.helpers import eventually
from tests.test_starter import starter as run_starter

pytestmark = pytest.mark.usefixtures("pipeline_worker")

PERSONAS = ["David Chen", "Maria Gonzalez"]
ARC = "Couple Conflict -> Alignment"
TOPICS = ["Essential Estate Planning", "Paying Down Debt"]
CLI_LAUNCH = ["launch", "--persona", PERSONAS[0], "--persona", PERSONAS[1], "--arc", ARC,
              "--topic", TOPICS[0], "--topic", TOPICS[1], "--tier", "template"]


async def starter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """starter.py in a thread: the test's event loop runs the worker, which the command waits for."""
    return await asyncio.to_thread(run_starter, env, *args)


def request(**overrides: object) -> batches.LaunchRequest:
    fields: dict[str, object] = {"personas": PERSONAS, "arcs": [ARC], "topics": TOPICS, "tier": Tier.TEMPLATE, "concurrency": 3}
    return batches.LaunchRequest(**(fields | overrides))  # type: ignore[arg-type]


@pytest.fixture
async def stack_claude(stack_settings: Settings) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with create_claude_client(stack_settings) as client:
        yield client


@pytest.fixture(scope="module")
async def history(sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings) -> None:
    """Conversations made with the template before: the estimate's output tokens come from them."""
    job = await batches.launch(sessions, stack_client, stack_settings, request(user="history"))
    await stack_client.get_workflow_handle(job.workflow_id).result()


async def _rows(sessions: async_sessionmaker) -> tuple[int, int]:
    async with sessions() as session:
        return (
            await session.scalar(select(func.count()).select_from(BatchJob)),
            await session.scalar(select(func.count()).select_from(BatchItem)),
        )


async def _job(sessions: async_sessionmaker, job_id: uuid.UUID) -> BatchJob:
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
    assert job is not None
    return job


def _within(estimated: float, actual: float, share: float = 0.10) -> bool:
    return abs(estimated - actual) <= share * actual


async def test_dry_run_prints_the_estimate_and_creates_nothing(
    cli_env: dict[str, str], sessions: async_sessionmaker, stack_client: Client, storage: Storage, standin: StandinControl
) -> None:
    rows_before = await _rows(sessions)
    started = datetime.now(UTC)
    objects_before = len(await storage.list_keys(storage.conversation_bucket, ""))

    result = await starter(cli_env, *CLI_LAUNCH, "--samples", "3", "--mode", "batch", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout)
    assert estimate["items"] == 2 * 2 * 3 and estimate["mode"] == "batch"
    for field in ("input_tokens", "output_tokens", "estimated_cost_usd", "estimated_cost_usd_batch", "estimated_seconds"):
        assert estimate[field] > 0, field
    # Half price in a batch; each sample is a prompt of its own, counted once by count_tokens.
    assert estimate["estimated_cost_usd_batch_without_cache"] == pytest.approx(estimate["estimated_cost_usd_without_cache"] / 2)
    assert estimate["estimated_cost_usd"] < estimate["estimated_cost_usd_without_cache"]  # the system text is cached
    assert estimate["distinct_prompts"] == estimate["prompts_counted"] == 12
    assert estimate["input_tokens_counted_by"] == "count_tokens"
    assert estimate["estimated_seconds"] == estimate["estimated_seconds_batch"]
    stats = await standin.stats()
    # 12 prompts, and the template's system text alone (and the probe it is measured against).
    assert (stats["token_counts"], stats["requests"], stats["batches"]) == (12 + 2, 0, 0)

    assert await _rows(sessions) == rows_before
    assert (await stack_client.count_workflows(f'StartTime > "{started.isoformat()}"')).count == 0
    assert len(await storage.list_keys(storage.conversation_bucket, "")) == objects_before


async def test_dry_run_counts_at_most_the_configured_prompts_and_scales_the_rest(
    cli_env: dict[str, str], standin: StandinControl
) -> None:
    limited = await starter({**cli_env, "ESTIMATE_MAX_TOKEN_COUNTS": "4"}, *CLI_LAUNCH, "--samples", "3", "--dry-run", "--json")
    full = await starter(cli_env, *CLI_LAUNCH, "--samples", "3", "--dry-run", "--json")

    assert limited.returncode == 0 and full.returncode == 0, limited.stderr + full.stderr
    scaled, counted = json.loads(limited.stdout), json.loads(full.stdout)
    assert (scaled["prompts_counted"], scaled["distinct_prompts"]) == (4, 12)
    assert (await standin.stats())["token_counts"] == (4 + 2) + (12 + 2)
    # The uncounted prompts, scaled by their length, come within 1% of counting every one.
    assert _within(scaled["input_tokens"], counted["input_tokens"], 0.01)


async def test_dry_run_refuses_what_launch_refuses_and_prints_a_readable_estimate(cli_env: dict[str, str]) -> None:
    refused = await starter(cli_env, *CLI_LAUNCH, "--max-cost", "0", "--dry-run")
    shown = await starter(cli_env, *CLI_LAUNCH, "--dry-run")

    assert refused.returncode == 2 and "--max-cost must be more than 0" in refused.stderr
    assert shown.returncode == 0, shown.stderr
    assert "nothing was created" in shown.stdout and "estimated_cost_usd_batch" in shown.stdout


async def test_without_token_counting_the_estimate_counts_characters_and_says_so(
    sessions: async_sessionmaker, stack_settings: Settings
) -> None:
    # Nothing listens on the port: every count fails at once, and the estimate still comes.
    settings = stack_settings.model_copy(update={"anthropic_base_url": f"http://127.0.0.1:{free_port()}"})
    async with create_claude_client(settings) as unreachable:
        estimate = await estimate_job(sessions, unreachable, settings, request(samples=2))

    assert estimate.input_tokens_counted_by == "characters" and estimate.prompts_counted == 0
    assert estimate.items == 8 and estimate.input_tokens > 0 and estimate.estimated_cost_usd > 0


async def test_the_estimate_agrees_with_what_the_job_spends_within_ten_percent(
    history: None,
    cli_env: dict[str, str],
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    stack_claude: anthropic.AsyncAnthropic,
    standin: StandinControl,
) -> None:
    await standin.reset()  # a cold prompt cache, as the estimate assumes for a job's first call
    job, estimate = await launch_estimated(sessions, stack_client, stack_claude, stack_settings, request(user="estimated"))
    await stack_client.get_workflow_handle(job.workflow_id).result()

    row = await _job(sessions, job.job_id)
    assert row.status == JobStatus.COMPLETED and row.estimate == estimate.model_dump(mode="json")
    assert estimate.output_tokens_from.startswith("history of")
    assert _within(estimate.input_tokens, row.input_tokens + row.cache_write_tokens + row.cache_read_tokens)
    assert _within(estimate.cache_read_tokens, row.cache_read_tokens)
    assert _within(estimate.output_tokens, row.output_tokens)
    assert _within(estimate.estimated_cost_usd, row.cost_usd)

    shown = await starter(cli_env, "status", str(job.job_id), "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["estimated_cost_usd"] == estimate.estimated_cost_usd and status["max_cost_usd"] is None
    table = await starter(cli_env, "status", str(job.job_id))
    assert f"(estimated {estimate.estimated_cost_usd})" in table.stdout


async def _paused_at_budget(sessions: async_sessionmaker, job_id: uuid.UUID) -> bool:
    job = await _job(sessions, job_id)
    return job.status == JobStatus.PAUSED and (job.pause_reason or "").startswith("budget reached")


@pytest.mark.parametrize("mode", [DeliveryMode.ONLINE, DeliveryMode.BATCH])
async def test_a_job_pauses_before_a_call_could_pass_its_budget_and_resumes_with_a_higher_one(
    mode: DeliveryMode,
    history: None,
    cli_env: dict[str, str],
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    stack_claude: anthropic.AsyncAnthropic,
    standin: StandinControl,
) -> None:
    planned: JobEstimate = await estimate_job(sessions, stack_claude, stack_settings, request(mode=mode))
    # An item and a half, at the projection of the costliest item: a second one does not fit.
    budget = round(planned.max_item_cost_usd * 1.5, 6)
    await standin.reset()
    job, _ = await launch_estimated(
        sessions, stack_client, stack_claude, stack_settings, request(mode=mode, user="budgeted", max_cost_usd=budget)
    )

    await eventually(lambda: _paused_at_budget(sessions, job.job_id), "the job pauses at its budget", timeout_s=60)
    row = await _job(sessions, job.job_id)
    calls = await standin.stats()
    sent = calls["batch_requests"] if mode == DeliveryMode.BATCH else calls["requests"]
    assert sent == row.completed_items == 1
    assert row.cost_usd <= budget < row.cost_usd + max(planned.max_item_cost_usd, row.cost_usd)
    assert row.pause_reason == f"budget reached: ${row.cost_usd:.4f} of ${budget:.4f}"
    shown = await starter(cli_env, "status", str(job.job_id), "--json")
    assert json.loads(shown.stdout)["max_cost_usd"] == budget
    assert "budget reached: $" in (await starter(cli_env, "status", str(job.job_id))).stdout

    # A resume that does not raise the budget would pause again at once: it says so, and sends nothing.
    again = await starter(cli_env, "resume", str(job.job_id))
    assert again.returncode == 2 and "would pause again at once" in again.stderr and "--max-cost" in again.stderr
    raised = await starter(cli_env, "resume", str(job.job_id), "--max-cost", str(round(budget * 10, 6)))
    assert raised.returncode == 0, raised.stderr

    await stack_client.get_workflow_handle(job_workflow_id(job.job_id)).result()
    row = await _job(sessions, job.job_id)
    assert row.status == JobStatus.COMPLETED and row.successful_items == 4
    assert row.max_cost_usd == round(budget * 10, 6) and row.pause_reason is None
    calls = await standin.stats()
    assert (calls["batch_requests"] if mode == DeliveryMode.BATCH else calls["requests"]) == 4
