"""Conversation rows and final files made directly on the real stack, for the tests of what
comes after generation (enrichment, review, export)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.storage import Storage, final_conversation_key
from devtools.load_catalog import catalog_id
from models.enums import ClaudeProvider, JobStatus, ReviewStatus
from models.tables import BatchJob, Conversation

PERSONA, ARC, TOPIC, TEMPLATE = "David Chen", "Couple Conflict -> Alignment", "Essential Estate Planning", "template - general"


def dialogue(seed: str, turns: int = 8) -> list[dict[str, str]]:
    """A conversation whose words depend on the seed: the same seed gives the same turns."""
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"{seed} turn {i}: David asks about estate planning, wills and guardianship for the "
            f"children, {seed} wants a clear plan for the family and a sense of control over what comes next.",
        }
        for i in range(turns)
    ]


async def new_job(sessions: async_sessionmaker, user: str) -> uuid.UUID:
    async with sessions.begin() as session:
        return await session.scalar(
            insert(BatchJob)
            .values(name="test job", status=JobStatus.PROCESSING.value, tier="template", created_by=user, total_items=1)
            .returning(BatchJob.id)
        )


async def new_conversation(
    sessions: async_sessionmaker, storage: Storage, job_id: uuid.UUID, user: str, turns: list[dict[str, str]],
    quality: dict[str, float] | None = None, quality_score: float = 0.9, **values: object,
) -> uuid.UUID:
    """A conversation row and its final file; written by Claude's API unless `provider` says otherwise."""
    values = {"provider": ClaudeProvider.ANTHROPIC.value, "provider_host": "api.anthropic.com", **values}
    conversation_id = uuid.uuid4()
    final_key = final_conversation_key(user, conversation_id)
    document = {"conversation_id": str(conversation_id), "quality": quality or {"turns": 1.0, "persona": 1.0},
                "title": "t", "metadata": {}, "turns": turns}
    await storage.put_json(storage.conversation_bucket, final_key, document)
    async with sessions.begin() as session:
        await session.execute(
            insert(Conversation).values(
                conversation_id=conversation_id, batch_job_id=job_id, created_by=user, title="t",
                raw_storage_path=f"raw/{user}/{conversation_id}_raw.json", final_storage_path=final_key,
                persona_id=catalog_id("persona", PERSONA), emotional_arc_id=catalog_id("arc", ARC),
                training_topic_id=catalog_id("topic", TOPIC), template_id=catalog_id("template", TEMPLATE),
                tier="template", turn_count=len(turns), quality_score=quality_score, generation_metadata={"model": "claude-test"}, **values,
            )
        )
    return conversation_id


async def approved_conversation_without_its_final_file(sessions: async_sessionmaker, storage: Storage) -> tuple[str, str]:
    """A new user's approved conversation whose final file is gone: its export must fail.
    Returns the user and the missing file's key."""
    user = f"ivan-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    lost = await new_conversation(sessions, storage, job, user, dialogue("lost"), review_status=ReviewStatus.APPROVED.value)
    key = final_conversation_key(user, lost)
    await asyncio.to_thread(storage.client.delete_object, Bucket=storage.conversation_bucket, Key=key)
    return user, key
