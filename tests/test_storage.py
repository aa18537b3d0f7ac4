"""Storage on the stack's real S3: what a step writes for the next one to read back."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from brightrun.storage import Storage, body_digest, prompt_key, raw_response_key
from models.enums import Tier
from models.tables import Conversation
from tests.helpers import launch_and_wait


def _key() -> str:
    return f"tests/read-back/{uuid.uuid4()}.json"


async def test_a_read_with_the_writers_digest_takes_the_body_written_here_once(storage: Storage) -> None:
    bucket, key = storage.conversation_bucket, _key()
    digest = await storage.put_json(bucket, key, {"text": "written here"}, read_back_soon=True)
    # S3 changes behind this process: only the reference's digest decides which version is meant.
    storage.client.put_object(Bucket=bucket, Key=key, Body=b'{"text": "written elsewhere"}')

    assert b"written here" in await storage.get_bytes(bucket, key, digest)
    assert await storage.get_bytes(bucket, key, digest) == b'{"text": "written elsewhere"}', "taken once"


async def test_a_read_of_another_version_or_without_a_digest_reads_s3(storage: Storage) -> None:
    bucket, key = storage.conversation_bucket, _key()
    digest = await storage.put_json(bucket, key, {"text": "first"}, read_back_soon=True)
    elsewhere = b'{"text": "second"}'
    storage.client.put_object(Bucket=bucket, Key=key, Body=elsewhere)

    assert await storage.get_bytes(bucket, key) == elsewhere
    assert await storage.get_bytes(bucket, key, body_digest(elsewhere)) == elsewhere
    assert digest != body_digest(elsewhere)


async def test_bodies_not_read_back_are_dropped_oldest_first_past_the_budget(stack_settings: Settings) -> None:
    storage = Storage(stack_settings)
    storage._read_back_soon._budget = 100  # two bodies of 40 bytes fit, a third drops the first
    bucket = storage.conversation_bucket
    written = [(key, await storage.put_bytes(bucket, key, bytes([n]) * 40, "application/octet-stream", True))
               for n, key in enumerate([_key(), _key(), _key()])]  # fmt: skip
    storage.client.put_object(Bucket=bucket, Key=written[0][0], Body=b"from s3")

    assert await storage.get_bytes(bucket, *written[0]) == b"from s3", "the oldest was dropped"
    assert await storage.get_bytes(bucket, *written[2]) == bytes([2]) * 40


@pytest.mark.usefixtures("pipeline_worker")
async def test_a_job_on_one_worker_reads_no_prompt_and_no_reply_back_from_s3(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, storage: Storage
) -> None:
    read_from_s3: list[str] = []

    def count_read(params: dict[str, Any], **_: Any) -> None:
        read_from_s3.append(params["Key"])

    storage.client.meta.events.register("before-parameter-build.s3.GetObject", count_read)
    try:
        job = await launch_and_wait(
            sessions, stack_client, stack_settings, personas=["David Chen", "Maria Gonzalez"],
            arcs=["Couple Conflict -> Alignment"], topics=["Essential Estate Planning"], tier=Tier.TEMPLATE,
            template="00000000-0000-0000-0000-000000000000", concurrency=2, user="read-back",
        )  # fmt: skip
    finally:
        storage.client.meta.events.unregister("before-parameter-build.s3.GetObject", count_read)

    async with sessions() as session:
        conversations = (await session.scalars(select(Conversation).where(Conversation.batch_job_id == job.job_id))).all()
    assert len(conversations) == 2
    written_for_read_back = {
        key
        for c in conversations
        for key in (prompt_key("read-back", c.conversation_id), raw_response_key("read-back", c.conversation_id))
    }
    assert read_from_s3, "the job's enrichment reads the final files from S3"
    assert written_for_read_back.isdisjoint(read_from_s3), read_from_s3
