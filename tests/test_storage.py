"""Storage on the stack's real S3: what a step writes for the next one to read back."""

from __future__ import annotations

import uuid

from brightrun.settings import Settings
from brightrun.storage import Storage, body_digest


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
