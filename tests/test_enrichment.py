"""Enrichment on the real PostgreSQL and S3: counts, quality parts, provenance, content hash,
near-duplicates within one user's conversations, the enriched file, and exactly-once under
repeated and concurrent attempts."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.enrichment import EnrichmentActivities, content_hash, signature, turn_counts
from brightrun.settings import Settings
from brightrun.storage import Storage, enriched_conversation_key, final_conversation_key
from models.enums import JobStatus, Tier
from models.messages import EnrichPageInput
from models.tables import Conversation
from service import batches
from tests.conversations import ARC, PERSONA, TOPIC, dialogue, new_conversation, new_job
from tests.helpers import launch_and_wait


async def rows_of(sessions: async_sessionmaker, job_id: uuid.UUID) -> dict[uuid.UUID, Conversation]:
    async with sessions() as session:
        rows = (await session.scalars(select(Conversation).where(Conversation.batch_job_id == job_id))).all()
    return {row.conversation_id: row for row in rows}


async def enrich_all(activities: EnrichmentActivities, job_id: uuid.UUID) -> int:
    total, more = 0, True
    while more:
        page = await ActivityEnvironment().run(activities.enrich_conversations, EnrichPageInput(job_id=job_id))
        total, more = total + page.enriched, page.more
    return total


def test_counts_and_hash_depend_on_the_turns_alone() -> None:
    turns = [{"role": "user", "content": "a" * 10}, {"role": "assistant", "content": "b" * 41}, {"role": "user", "content": "c"}]
    assert turn_counts(turns) == {"user_turns": 2, "assistant_turns": 1, "user_tokens": 3 + 1, "assistant_tokens": 11}
    assert content_hash(turns) == content_hash([dict(t) for t in turns])
    assert content_hash(turns) != content_hash(turns[:2])
    near = dialogue("alpha")
    near[3] = {**near[3], "content": near[3]["content"].replace("clear", "simple")}
    assert signature(dialogue("alpha")).jaccard(signature(near)) > 0.8
    assert signature(dialogue("alpha")).jaccard(signature(dialogue("omega-different"))) < 0.5


async def test_enrichment_fills_the_row_and_the_file_and_flags_near_duplicates_of_the_same_user(
    sessions: async_sessionmaker, storage: Storage
) -> None:
    user, other_user = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    activities = EnrichmentActivities(sessions, storage, page_size=2, near_duplicate_threshold=0.8)
    job_id = await new_job(sessions, user)
    original = await new_conversation(sessions, storage, job_id, user, dialogue("alpha"), {"turns": 1.0, "persona": 0.0})
    near = dialogue("alpha")
    near[5] = {**near[5], "content": near[5]["content"].replace("family", "household")}
    near_copy = await new_conversation(sessions, storage, job_id, user, near)
    exact_copy = await new_conversation(sessions, storage, job_id, user, dialogue("alpha"))
    different = await new_conversation(sessions, storage, job_id, user, dialogue("zulu"))
    # Another user's identical conversation is not compared with this user's.
    other_job = await new_job(sessions, other_user)
    others = await new_conversation(sessions, storage, other_job, other_user, dialogue("alpha"))

    assert await enrich_all(activities, job_id) == 4
    assert await enrich_all(activities, other_job) == 1

    rows = await rows_of(sessions, job_id)
    first = rows[original]
    assert (first.user_turns, first.assistant_turns) == (4, 4)
    assert first.user_tokens is not None and first.assistant_tokens is not None and first.provenance is not None
    assert first.user_tokens > 0 and first.assistant_tokens > 0
    assert first.quality_parts == {"turns": 1.0, "persona": 0.0}
    assert first.provenance["persona"]["name"] == PERSONA and first.provenance["model"] == "claude-test"
    assert first.provenance["emotional_arc"]["arc_type"] == "conflict_resolution"
    assert first.content_hash == content_hash(dialogue("alpha"))
    assert not first.near_duplicate
    assert [c["check"] for c in first.failed_checks] == ["quality.persona"]
    assert "persona" in first.failed_checks[0]["reason"]

    assert rows[near_copy].near_duplicate and rows[near_copy].near_duplicate_of == original
    assert rows[near_copy].failed_checks[0]["check"] == "near_duplicate"
    assert rows[exact_copy].near_duplicate and rows[exact_copy].near_duplicate_of == original
    assert rows[exact_copy].failed_checks[0]["check"] == "duplicate"
    assert not rows[different].near_duplicate and rows[different].failed_checks == []
    assert not (await rows_of(sessions, other_job))[others].near_duplicate

    enriched = json.loads(await storage.get_bytes(storage.conversation_bucket, enriched_conversation_key(user, near_copy)))
    assert enriched["near_duplicate_of"] == str(original) and enriched["user_turns"] == 4
    assert enriched["provenance"]["training_topic"]["name"] == TOPIC and enriched["job_id"] == str(job_id)


async def test_enrichment_runs_once_per_conversation_under_repeated_and_concurrent_attempts(
    sessions: async_sessionmaker, storage: Storage
) -> None:
    user = f"carol-{uuid.uuid4().hex[:6]}"
    job_id = await new_job(sessions, user)
    for n in range(7):
        await new_conversation(sessions, storage, job_id, user, dialogue(f"seed{n}"))
    activities = EnrichmentActivities(sessions, storage, page_size=3, near_duplicate_threshold=0.8)

    # Three attempts at once (a retried activity whose first attempt still runs): each row once.
    done = await asyncio.gather(*(enrich_all(activities, job_id) for _ in range(3)))
    assert sum(done) == 7
    before = {key: (row.enriched_at, row.updated_at) for key, row in (await rows_of(sessions, job_id)).items()}
    assert all(enriched_at is not None for enriched_at, _ in before.values())

    # A re-run changes nothing.
    assert await enrich_all(activities, job_id) == 0
    after = {key: (row.enriched_at, row.updated_at) for key, row in (await rows_of(sessions, job_id)).items()}
    assert after == before


async def test_a_missing_final_file_is_a_failed_check_not_a_failed_job(sessions: async_sessionmaker, storage: Storage) -> None:
    user = f"dave-{uuid.uuid4().hex[:6]}"
    job_id = await new_job(sessions, user)
    lost = await new_conversation(sessions, storage, job_id, user, dialogue("lost"))
    await asyncio.to_thread(
        storage.client.delete_object, Bucket=storage.conversation_bucket, Key=final_conversation_key(user, lost)
    )

    assert await enrich_all(EnrichmentActivities(sessions, storage, 10, 0.8), job_id) == 1

    row = (await rows_of(sessions, job_id))[lost]
    assert row.enriched_at is not None and row.user_turns is None
    assert row.failed_checks == [{"check": "final_file", "reason": f"final file {row.final_storage_path} is missing"}]


@pytest.mark.usefixtures("pipeline_worker")
async def test_a_real_batch_is_enriched_before_it_ends_and_status_counts_it(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    user = f"erin-{uuid.uuid4().hex[:6]}"
    job = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=[PERSONA, "Maria Gonzalez"], arcs=[ARC],
        topics=[TOPIC, "Paying Down Debt"], tier=Tier.TEMPLATE, user=user,
    )

    status = await batches.job_status(sessions, str(job.job_id), stack_client)
    rows = await rows_of(sessions, job.job_id)
    assert status.status == JobStatus.COMPLETED and status.successful == status.enriched == len(rows) == 4
    for row in rows.values():
        assert row.provenance is not None and row.user_turns is not None and row.assistant_turns is not None
        assert row.enriched_at is not None and row.provenance["tier"] == "template"
        assert row.user_turns + row.assistant_turns == row.turn_count
        enriched = json.loads(await storage.get_bytes(storage.conversation_bucket, enriched_conversation_key(user, row.conversation_id)))
        assert enriched["content_hash"] == row.content_hash
    # The web UI shows the workflow's current details.
    metadata = await stack_client.get_workflow_handle(job.workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    assert metadata.current_details.startswith("**completed**: 4 of 4 done, 4 succeeded")
    assert metadata.current_details.endswith("; enriched 4 conversations")
