"""The operator's commands on the real stack: why items failed (`items`, failures by kind in
`status`), the job's log (`log`, `log --follow`), ids given as prefixes, and every table read in
an 80-column terminal."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from brightrun.storage import Storage, job_log_key
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, ItemStatus, JobStatus, Tier
from models.tables import BatchItem, BatchJob, BatchJobEvent
from service import batches
from service.errors import BatchInputError
from service.ids import MIN_PREFIX, IdKind, resolve_id, short_ids
from service.job_outcome import job_outcome
from starter import _status_fields
from tests.conftest import REPO
from tests.conversations import dialogue, new_conversation, new_job
from tests.helpers import eventually
from tests.test_starter import starter


def _batch(personas: list[str], concurrency: int = 2, samples: int = 1) -> batches.LaunchRequest:
    return batches.LaunchRequest(
        personas=personas, arcs=["Couple Conflict -> Alignment"], topics=["Essential Estate Planning"],
        tier=Tier.TEMPLATE, concurrency=concurrency, samples=samples,
    )


@pytest.fixture(scope="module")
def narrow_env(cli_env: dict[str, str]) -> dict[str, str]:
    """A terminal 80 columns wide, as rich reads it."""
    return {**cli_env, "COLUMNS": "80"}


async def _failed_job(
    sessions: async_sessionmaker, client: Client, settings: Settings, standin: StandinControl
) -> batches.LaunchedJob:
    """A job whose two items Claude refuses (400: prompt is too long)."""
    await standin.configure(faults={"400": 1.0})
    job = await batches.launch(sessions, client, settings, _batch(["David Chen", "Maria Gonzalez"]))
    progress = await job_outcome(client.get_workflow_handle(job.workflow_id))
    assert progress.status == JobStatus.FAILED
    return job


@pytest.mark.usefixtures("pipeline_worker")
async def test_items_status_and_log_say_why_items_failed_without_sql(
    cli_env: dict[str, str], narrow_env: dict[str, str], sessions: async_sessionmaker, stack_client: Client,
    stack_settings: Settings, standin: StandinControl, storage: Storage,
) -> None:
    job = await _failed_job(sessions, stack_client, stack_settings, standin)
    prefix = str(job.job_id)[:MIN_PREFIX]

    listed = await asyncio.to_thread(starter, cli_env, "items", prefix, "--status", "failed", "--json")
    status = await asyncio.to_thread(starter, cli_env, "status", prefix, "--json")
    shown = await asyncio.to_thread(starter, narrow_env, "status", prefix)
    logged = await asyncio.to_thread(starter, cli_env, "log", prefix)

    assert listed.returncode == status.returncode == shown.returncode == logged.returncode == 0, listed.stderr + status.stderr
    items = json.loads(listed.stdout)
    async with sessions() as session:
        rows = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job.job_id))).all()
    assert sorted((i["item_id"], i["status"], i["attempts"], i["error_type"], i["conversation_id"]) for i in items) == sorted(
        (str(row.id), "failed", 1, "claude_400", None) for row in rows
    )
    assert all("prompt is too long" in i["error_message"] for i in items)
    assert [(i["persona"], i["emotional_arc"], i["sample"]) for i in items] == [
        ("David Chen", "Couple Conflict -> Alignment", 1), ("Maria Gonzalez", "Couple Conflict -> Alignment", 1),
    ]
    failures = json.loads(status.stdout)["failures"]
    assert [(f["error_type"], f["count"]) for f in failures] == [("claude_400", 2)]
    assert "2 claude_400: Claude API 400: messages: prompt is too long" in " ".join(shown.stdout.split())
    assert "batch_items" not in shown.stdout
    log_file = (await storage.get_bytes(storage.log_bucket, job_log_key(job.job_id))).decode()
    assert logged.stdout == log_file
    assert sum("failed: Claude API 400" in line for line in logged.stdout.splitlines()) == 2


async def test_log_follow_prints_new_lines_until_the_job_ends(
    cli_env: dict[str, str], sessions: async_sessionmaker
) -> None:
    job_id = await new_job(sessions, "follower")  # processing, with no workflow: the lines come from here
    await _log_line(sessions, job_id, "job processing: 1 items to run")
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "starter.py", "log", str(job_id)[:10], "--follow", "--interval", "0.2",
        cwd=REPO, env=cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        first = await asyncio.wait_for(follower.stdout.readline(), 60)  # it runs, and printed what was there
        await _log_line(sessions, job_id, "item 0 (x) failed: boom")
        async with sessions.begin() as session:
            await session.execute(update(BatchJob).where(BatchJob.id == job_id).values(status=JobStatus.FAILED.value))
            session.add(BatchJobEvent(batch_job_id=job_id, line="job failed: all 1 items failed"))
        rest, errors = await asyncio.wait_for(follower.communicate(), 60)
    finally:
        if follower.returncode is None:
            follower.kill()

    assert follower.returncode == 0, errors
    lines = [line.split(" ", 1)[1] for line in (first + rest).decode().splitlines()]
    assert lines == ["job processing: 1 items to run", "item 0 (x) failed: boom", "job failed: all 1 items failed"]


async def _log_line(sessions: async_sessionmaker, job_id: uuid.UUID, line: str) -> None:
    async with sessions.begin() as session:
        await session.execute(insert(BatchJobEvent).values(batch_job_id=job_id, line=line))


async def _jobs_sharing_a_prefix(sessions: async_sessionmaker) -> tuple[uuid.UUID, uuid.UUID]:
    """Two jobs whose ids share their first 10 characters (9 digits and the dash)."""
    shared = uuid.uuid4().hex[:9]
    ids = (uuid.UUID(f"{shared}a{uuid.uuid4().hex[10:]}"), uuid.UUID(f"{shared}b{uuid.uuid4().hex[10:]}"))
    async with sessions.begin() as session:
        for job_id in ids:
            await session.execute(
                insert(BatchJob).values(id=job_id, name="twin", status=JobStatus.COMPLETED.value, tier="template",
                                        created_by="twins", total_items=0)
            )
    return ids[0], ids[1]


async def test_a_prefix_names_one_job_or_says_in_one_line_why_not(
    cli_env: dict[str, str], sessions: async_sessionmaker
) -> None:
    first, second = await _jobs_sharing_a_prefix(sessions)
    shared = str(first)[:MIN_PREFIX]

    async with sessions() as session:
        assert await resolve_id(session, IdKind.JOB, str(first)[:12].upper()) == first
        assert await short_ids(session, IdKind.JOB, [first, second]) == {first: str(first)[:11], second: str(second)[:11]}
    cases = {
        str(first)[:11]: (0, ""),
        shared: (2, f"error: job id {shared} matches 2 jobs: {first}, {second}; give more characters"),
        "0000000f": (2, "error: job 0000000f not found"),
        shared[:7]: (2, f"error: job id '{shared[:7]}' is too short: give at least 8 characters of it"),
        "not-an-id": (2, "error: job id 'not-an-id' is not a valid UUID or a prefix of one"),
    }
    results = await asyncio.gather(*(asyncio.to_thread(starter, cli_env, "log", ref) for ref in cases))

    assert [(r.returncode, r.stderr.strip()) for r in results] == list(cases.values())


async def test_conversation_ids_are_taken_as_prefixes(
    cli_env: dict[str, str], sessions: async_sessionmaker, storage: Storage
) -> None:
    user = f"pre-{uuid.uuid4().hex[:6]}"
    conversation = await new_conversation(sessions, storage, await new_job(sessions, user), user, dialogue("pre"))
    prefix = str(conversation)[:MIN_PREFIX]

    shown = await asyncio.to_thread(starter, cli_env, "review", "show", prefix, "--user", user, "--json")
    approved = await asyncio.to_thread(starter, cli_env, "review", "approve", prefix, "--user", user, "--json")

    assert shown.returncode == approved.returncode == 0, shown.stderr + approved.stderr
    assert json.loads(shown.stdout)["conversation_id"] == str(conversation)
    assert json.loads(approved.stdout)["conversation_ids"] == [str(conversation)]


# An id or a prefix of one, as a table shows it.
_ID = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{1,4}(?:-[0-9a-f]{1,4}(?:-[0-9a-f]{1,4}(?:-[0-9a-f]{1,12})?)?)?)?\b")


@pytest.mark.usefixtures("pipeline_worker")
async def test_every_table_fits_80_columns_with_whole_headers_and_unique_ids(
    narrow_env: dict[str, str], sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings,
    standin: StandinControl, storage: Storage,
) -> None:
    job = await _failed_job(sessions, stack_client, stack_settings, standin)
    await _jobs_sharing_a_prefix(sessions)  # ids that need more than 8 characters to tell apart
    user = f"narrow-{uuid.uuid4().hex[:6]}"
    own_job = await new_job(sessions, user)
    conversation = await new_conversation(
        sessions, storage, own_job, user, dialogue("narrow"), quality={"turns": 1.0, "persona": 0.75},
        failed_checks=[{"check": "length", "reason": "short"}],
    )
    # Each table's header words: the ones that must be there (the rest may be left out), and all.
    commands = {
        "jobs": (["jobs"], {"job", "status", "ended", "failed"},
                 {"succeeded", "cancelled", "name", "cost", "$", "created", "user", "tier", "mode"}),
        "items": (["items", str(job.job_id)], {"#", "status", "error"},
                  {"runs", "conversation", "persona", "arc", "topic", "sample", "template", "item"}),
        "catalog": (["catalog"], {"personas"}, set()),
        "review list": (["review", "list", "--user", user], {"conversation", "review", "quality", "arc"},
                        {"judge", "persona", "topic", "flags", "enriched", "job", "reviewed", "by", "final", "file"}),
        "status": (["status", str(job.job_id)], set(), None),
        "review show": (["review", "show", str(conversation), "--user", user], set(), None),
    }

    results = await asyncio.gather(*(asyncio.to_thread(starter, narrow_env, *args) for args, _, _ in commands.values()))

    for (name, (_, required, optional)), result in zip(commands.items(), results, strict=True):
        assert result.returncode == 0, f"{name}: {result.stderr}"
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, f"{name}:\n{result.stdout}"
        assert "…" not in result.stdout, f"{name} cut a value:\n{result.stdout}"
        if optional is not None:
            header = set(lines[0].split())
            assert required <= header <= required | optional, f"{name}: {lines[0]}"
        async with sessions() as session:
            for shown_id in _ID.findall(result.stdout):
                whole = len(shown_id) == len(str(job.job_id))  # the catalog's ids, say: never too short
                named = [kind for kind in IdKind if await _names_one(session, kind, shown_id)]
                assert whole or named, f"{name} shows {shown_id}, which names no single job, item or conversation"
    review_show = results[-1].stdout
    assert "quality parts turns 1.00, persona 0.75" in " ".join(review_show.split()) and "{" not in review_show
    review_list = results[3].stdout
    assert "pending_review" in review_list and "Couple Conflict" in review_list


async def _names_one(session: AsyncSession, kind: IdKind, shown: str) -> bool:
    try:
        value = await resolve_id(session, kind, shown)
    except BatchInputError:
        return False
    return await session.scalar(select(kind.column).where(kind.column == value)) is not None


@pytest.mark.usefixtures("pipeline_worker")
async def test_pause_resume_and_cancel_print_one_line(
    cli_env: dict[str, str], sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings,
    standin: StandinControl,
) -> None:
    # 12 calls of 3 s one at a time: the job runs while the three commands start and act.
    await standin.configure(latency_ms=3000)
    job = await batches.launch(
        sessions, stack_client, stack_settings,
        _batch(["David Chen", "Maria Gonzalez", "Priya Patel", "James Okafor"], concurrency=1, samples=3),
    )
    await eventually(lambda: _requests_at_least(standin, 1), "a Claude call is under way")
    prefix = str(job.job_id)[:MIN_PREFIX]

    lines = []
    for action in ("pause", "resume", "cancel"):
        result = await asyncio.to_thread(starter, cli_env, action, prefix)
        assert result.returncode == 0, result.stderr
        lines.append(result.stdout)

    assert [line.count("\n") for line in lines] == [1, 1, 1]
    assert lines[0].startswith(f"job {prefix}") and " paused: " in lines[0]
    assert " processing: " in lines[1]
    assert " cancelled: " in lines[2] and lines[2].rstrip().endswith("of 12; 0 in flight")


async def _requests_at_least(standin: StandinControl, count: int) -> bool:
    return (await standin.stats())["requests"] >= count


async def test_names_match_in_any_case_and_a_typo_gets_a_suggestion(sessions: async_sessionmaker) -> None:
    request = _batch(["david chen"])
    job_id, total = await batches.create_job(sessions, request)
    async with sessions() as session:
        item = await session.scalar(select(BatchItem).where(BatchItem.batch_job_id == job_id))
    assert total == 1 and item is not None and item.status == ItemStatus.QUEUED

    with pytest.raises(BatchInputError, match=r"^unknown persona 'Davd Chen': did you mean 'David Chen'\?$"):
        await batches.create_job(sessions, _batch(["Davd Chen"]))
    with pytest.raises(BatchInputError, match=r"^unknown persona 'Nobody' \(run `starter.py catalog` to list them\)$"):
        await batches.create_job(sessions, _batch(["Nobody"]))


def test_status_shows_the_items_on_one_line_and_no_concurrency_for_a_batch_mode_job() -> None:
    view = batches.JobStatusView(
        job_id=uuid.uuid4(), workflow_id="batch-job-x", status=JobStatus.CANCELLED, mode=DeliveryMode.BATCH,
        concurrency=3, total=16, completed=10, successful=10, failed=0, cancelled=6, in_flight=0, remaining=0,
        enriched=0, elapsed_s=1.0, eta_seconds=0.0, input_tokens=1, output_tokens=1, cost_usd=0.5,
        started_at=None, completed_at=None, waiting_on=None,
    )

    fields = dict(_status_fields(view))

    assert fields["items"] == "16: 10 succeeded, 0 failed, 6 cancelled, 0 in flight, 0 queued"
    assert "concurrency" not in fields and "completed" not in fields and "successful" not in fields
    assert fields["cost ($)"] == "0.5" and fields["eta (s)"] == "0.0"
