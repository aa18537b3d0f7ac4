"""The schema, from the migrations, on real PostgreSQL: the old system's failures 1 and 3 are
impossible here, and the migrations go up and down cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, make_url, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.load_catalog import catalog_id
from models.enums import ErrorPolicy, ExportFormat, ExportStatus, ItemStatus, JobStatus, ReviewStatus
from models.tables import MAX_JOB_CONCURRENCY, BatchItem, BatchJob, Conversation, Export
from tests.conftest import REPO

NOT_STATUSES = ["pending", "running", "done", "error", "QUEUED", "Completed", ""]


@pytest.fixture
async def rollback_session(sessions: async_sessionmaker) -> AsyncIterator[AsyncSession]:
    """A session whose every write is rolled back at the end of the test."""
    async with sessions() as session:
        yield session
        await session.rollback()


async def _new_job(session: AsyncSession, status: str = JobStatus.QUEUED.value) -> uuid.UUID:
    return (
        await session.scalars(
            insert(BatchJob)
            .values(name="schema test", status=status, tier="template", created_by="test", total_items=1)
            .returning(BatchJob.id)
        )
    ).one()


async def _new_item(session: AsyncSession, job_id: uuid.UUID, status: str = ItemStatus.QUEUED.value) -> uuid.UUID:
    return (
        await session.scalars(
            insert(BatchItem)
            .values(batch_job_id=job_id, position=0, topic="t", tier="template", parameters={}, status=status)
            .returning(BatchItem.id)
        )
    ).one()


async def _new_conversation(
    session: AsyncSession, job_id: uuid.UUID, business_key: uuid.UUID | None = None, **values: object
) -> uuid.UUID:
    inserted = await session.scalars(
        insert(Conversation)
        .values(
            {
                "conversation_id": business_key or uuid.uuid4(),
                "batch_job_id": job_id,
                "created_by": "test",
                "title": "t",
                "raw_storage_path": "raw/test/x_raw.json",
                "final_storage_path": "raw/test/x.json",
                "persona_id": catalog_id("persona", "David Chen"),
                "emotional_arc_id": catalog_id("arc", "Couple Conflict -> Alignment"),
                "training_topic_id": catalog_id("topic", "Essential Estate Planning"),
                "template_id": catalog_id("template", "template - general"),
                "tier": "template",
                "turn_count": 6,
                **values,
            }
        )
        .returning(Conversation.id)
    )
    return inserted.one()


@pytest.mark.parametrize("status", [s.value for s in JobStatus])
async def test_every_job_status_the_code_writes_is_accepted(rollback_session: AsyncSession, status: str) -> None:
    job_id = await _new_job(rollback_session, status)
    assert await rollback_session.scalar(text("select status from batch_jobs where id = :id"), {"id": job_id}) == status


@pytest.mark.parametrize("status", NOT_STATUSES)
async def test_any_other_job_status_is_rejected(rollback_session: AsyncSession, status: str) -> None:
    with pytest.raises(IntegrityError, match="ck_batch_jobs_status"):
        await _new_job(rollback_session, status)


@pytest.mark.parametrize("status", [s.value for s in ItemStatus])
async def test_every_item_status_the_code_writes_is_accepted(rollback_session: AsyncSession, status: str) -> None:
    item_id = await _new_item(rollback_session, await _new_job(rollback_session), status)
    assert await rollback_session.scalar(text("select status from batch_items where id = :id"), {"id": item_id}) == status


@pytest.mark.parametrize("status", [*NOT_STATUSES, "paused"])
async def test_any_other_item_status_is_rejected(rollback_session: AsyncSession, status: str) -> None:
    job_id = await _new_job(rollback_session)
    with pytest.raises(IntegrityError, match="ck_batch_items_status"):
        await _new_item(rollback_session, job_id, status)


@pytest.mark.parametrize("policy", [p.value for p in ErrorPolicy])
async def test_every_error_policy_is_accepted(rollback_session: AsyncSession, policy: str) -> None:
    job_id = await _new_job(rollback_session)
    await rollback_session.execute(update(BatchJob).where(BatchJob.id == job_id).values(error_handling=policy))


async def test_every_concurrency_a_launch_accepts_is_accepted_and_no_more(rollback_session: AsyncSession) -> None:
    job_id = await _new_job(rollback_session)
    for concurrency in (1, MAX_JOB_CONCURRENCY):
        await rollback_session.execute(update(BatchJob).where(BatchJob.id == job_id).values(concurrent_processing=concurrency))
    with pytest.raises(IntegrityError, match="ck_batch_jobs_concurrent_processing"):
        await rollback_session.execute(
            update(BatchJob).where(BatchJob.id == job_id).values(concurrent_processing=MAX_JOB_CONCURRENCY + 1)
        )


async def test_a_new_conversation_waits_for_review(rollback_session: AsyncSession) -> None:
    conversation = await _new_conversation(rollback_session, await _new_job(rollback_session))
    row = await rollback_session.get(Conversation, conversation)
    assert row is not None
    assert (row.review_status, row.near_duplicate, row.failed_checks, row.enriched_at) == (
        ReviewStatus.PENDING_REVIEW.value, False, [], None
    )


@pytest.mark.parametrize("status", [s.value for s in ReviewStatus])
async def test_every_review_status_the_code_writes_is_accepted(rollback_session: AsyncSession, status: str) -> None:
    await _new_conversation(rollback_session, await _new_job(rollback_session), review_status=status)


@pytest.mark.parametrize("status", [*NOT_STATUSES, "pending", "approve", "reviewed"])
async def test_any_other_review_status_is_rejected(rollback_session: AsyncSession, status: str) -> None:
    job_id = await _new_job(rollback_session)
    with pytest.raises(IntegrityError, match="ck_conversations_review_status"):
        await _new_conversation(rollback_session, job_id, review_status=status)


@pytest.mark.parametrize("status", [s.value for s in ExportStatus])
async def test_every_export_status_is_accepted_and_others_rejected(rollback_session: AsyncSession, status: str) -> None:
    values = {"created_by": "test", "format": ExportFormat.MESSAGES.value, "selection": {}, "location": "/tmp/x"}
    await rollback_session.execute(insert(Export).values(status=status, **values))
    with pytest.raises(IntegrityError, match="ck_exports_status"):
        async with rollback_session.begin_nested():
            await rollback_session.execute(insert(Export).values(status=status.upper(), **values))


async def test_the_item_links_the_primary_key_and_the_database_refuses_the_business_key(
    rollback_session: AsyncSession,
) -> None:
    job_id = await _new_job(rollback_session)
    item_id = await _new_item(rollback_session, job_id)
    business_key = uuid.uuid4()
    primary_key = await _new_conversation(rollback_session, job_id, business_key)
    assert primary_key != business_key

    await rollback_session.execute(update(BatchItem).where(BatchItem.id == item_id).values(conversation_id=primary_key))

    with pytest.raises(IntegrityError, match="fk_batch_items_conversation_id_conversations"):
        async with rollback_session.begin_nested():
            await rollback_session.execute(
                update(BatchItem).where(BatchItem.id == item_id).values(conversation_id=business_key)
            )


async def test_migrations_upgrade_downgrade_and_match_the_models(stack_settings: Settings) -> None:
    server = make_url(stack_settings.database_url)
    database = f"brightrun_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{database}"'))
    url = server.set(database=database)
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}

    def alembic(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alembic", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True)

    try:
        steps = [alembic("upgrade", "head"), alembic("check"), alembic("downgrade", "base")]
        tables_after_downgrade = None
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            tables_after_downgrade = (
                await connection.execute(text("select tablename from pg_tables where schemaname = 'public'"))
            ).scalars().all()
        await engine.dispose()
        steps.append(alembic("upgrade", "head"))
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        await admin.dispose()

    for step in steps:
        assert step.returncode == 0, step.stderr
    assert "No new upgrade operations detected" in steps[1].stdout + steps[1].stderr
    assert tables_after_downgrade == ["alembic_version"]


async def test_the_provider_backfill_fills_in_who_answered_where_the_raw_reply_file_says(
    stack: dict[str, str], stack_settings: Settings, storage: Storage
) -> None:
    """Conversations written before providers were recorded, then the upgrade: the raw reply
    file decides (a dummy API key's stand-in replies said generated_by "anthropic")."""
    server = make_url(stack_settings.database_url)
    database = f"brightrun_backfill_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{database}"'))
    url = server.set(database=database)
    env = {**os.environ, **stack, "DATABASE_URL": url.render_as_string(hide_password=False)}

    def run(*args: str) -> None:
        done = subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    prefix = f"raw/backfill-{uuid.uuid4().hex[:8]}"
    raw_files = {
        "claude": {"generated_by": "anthropic", "request_id": "req_011CabC", "message": {"id": "msg_01XyZ"}},
        "dummy key": {"generated_by": "anthropic", "request_id": "req_standin_1", "message": {"id": "msg_standin_1"}},
        "no key": {"generated_by": "offline-standin", "request_id": "req_standin_2", "message": {"id": "msg_standin_2"}},
        "stand-in batch": {"message_batch_id": "msgbatch_standin_3", "message": {"id": "msg_standin_3"}},
        "claude batch": {"message_batch_id": "msgbatch_01AbC", "message": {"id": "msg_01AbD"}},
        "says neither": {"generated_by": "anthropic", "message": {}},
    }
    for name, raw in raw_files.items():
        await storage.put_json(storage.conversation_bucket, f"{prefix}/{name}.json", raw)
    try:
        run("-m", "alembic", "upgrade", "0013")
        run("-m", "devtools.load_catalog", "--without-rubrics")  # the judge's rubrics come with 0018
        engine = create_async_engine(url)
        async with async_sessionmaker(engine).begin() as session:
            job_id = await _new_job(session)
            ids = {
                name: await _new_conversation(session, job_id, raw_storage_path=f"{prefix}/{name}.json")
                for name in [*raw_files, "file missing"]
            }
        run("-m", "alembic", "upgrade", "head")
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT id, provider FROM conversations"))).all()
            found = {row.id: row.provider for row in rows}
        await engine.dispose()
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        await admin.dispose()

    assert {name: found[ids[name]] for name in ids} == {
        "claude": "anthropic", "dummy key": "offline-standin", "no key": "offline-standin",
        "stand-in batch": "offline-standin", "claude batch": "anthropic", "says neither": None, "file missing": None,
    }
