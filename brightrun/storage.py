"""S3 storage through boto3. boto3 blocks, so every call runs in a worker thread."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from brightrun.settings import Settings


# The old system's layout, kept: a user's raw responses and final conversations share one folder.
def _conversation_folder(user_id: str) -> str:
    return f"raw/{user_id}"


def raw_response_key(user_id: str, conversation_id: object, repair: bool = False) -> str:
    """The model's raw response; a repair's answer is kept beside the rejected first one."""
    return f"{_conversation_folder(user_id)}/{conversation_id}_raw{'_repair' if repair else ''}.json"


def final_conversation_key(user_id: str, conversation_id: object) -> str:
    """The parsed conversation, in the same folder as its raw response."""
    return f"{_conversation_folder(user_id)}/{conversation_id}.json"


def batch_request_key(user_id: str, conversation_id: object, sequence: int) -> str:
    """The params of an item's request number `sequence` for a Message Batch."""
    return f"requests/{user_id}/{conversation_id}_{sequence}.json"


def enriched_conversation_key(user_id: str, conversation_id: object) -> str:
    """The enrichment record (counts, quality parts, provenance, duplicate check), beside the final file."""
    return f"{_conversation_folder(user_id)}/{conversation_id}_enriched.json"


def prompt_key(user_id: str, conversation_id: object) -> str:
    """The resolved prompt (system and user text) an item's calls send."""
    return f"requests/{user_id}/{conversation_id}_prompt.json"


def judge_request_key(user_id: str, conversation_id: object, rubric_name: str, rubric_version: int) -> str:
    """A judge call's request (the rubric, the conversation, the verdict tool), beside the prompt."""
    return f"requests/{user_id}/{conversation_id}_judge_{rubric_name}_v{rubric_version}.json"


def judge_raw_key(user_id: str, conversation_id: object, rubric_name: str, rubric_version: int, repair: bool = False) -> str:
    """The judge's raw reply under one rubric version; a repair's is kept beside the rejected one."""
    name = f"{conversation_id}_judge_{rubric_name}_v{rubric_version}_raw{'_repair' if repair else ''}"
    return f"{_conversation_folder(user_id)}/{name}.json"


def conversation_prefixes(user_id: str, conversation_id: object) -> list[str]:
    """Where the objects of one conversation live: its raw replies, final and enrichment files,
    its prompt and the requests it sent in Message Batches."""
    return [f"{_conversation_folder(user_id)}/{conversation_id}", f"requests/{user_id}/{conversation_id}_"]


def job_log_key(job_id: object) -> str:
    return f"{job_id}/log.txt"


@contextmanager
def _naming(bucket: str, key: str) -> Iterator[None]:
    """A failed call says which object it was about (activities/data_errors.py quotes it)."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        exc.add_note(f"s3://{bucket}/{key}")
        raise


def body_digest(body: bytes) -> str:
    """What a reference to a stored object carries to say which version of it it means."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


class _ReadBackSoon:
    """Objects this process wrote for a later step to read (an item's prompt, its raw reply): that
    step usually runs in the same process moments later, and a read of its own write costs a
    round trip and a few ms of boto3. A read takes the body out when its reference's digest says
    it is the version written here; anything else reads S3. The oldest go first past the budget
    (their reader ran elsewhere or never will)."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._size = 0
        self._bodies: OrderedDict[tuple[str, str], tuple[str, bytes]] = OrderedDict()

    def keep(self, bucket: str, key: str, digest: str, body: bytes) -> None:
        self._drop((bucket, key))
        self._bodies[(bucket, key)] = (digest, body)
        self._size += len(body)
        while self._size > self._budget:
            self._drop(next(iter(self._bodies)))

    def take(self, bucket: str, key: str, digest: str) -> bytes | None:
        kept = self._bodies.get((bucket, key))
        if kept is None or kept[0] != digest:
            return None
        self._drop((bucket, key))
        return kept[1]

    def _drop(self, where: tuple[str, str]) -> None:
        kept = self._bodies.pop(where, None)
        if kept is not None:
            self._size -= len(kept[1])


class Storage:
    # Enough for the prompts and replies of a few thousand items between their write and read.
    READ_BACK_BUDGET_BYTES = 32 * 2**20

    def __init__(self, settings: Settings) -> None:
        self.conversation_bucket = settings.conversation_bucket
        self.log_bucket = settings.log_bucket
        self._read_back_soon = _ReadBackSoon(self.READ_BACK_BUDGET_BYTES)
        # boto3 loads its service models on import (0.1-0.3 s): only a process that reaches S3 pays for it.
        import boto3
        from botocore.config import Config

        self._client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key.get_secret_value(),
            config=Config(retries={"mode": "standard", "max_attempts": 3}, s3={"addressing_style": "path"}),
        )

    @property
    def client(self) -> Any:
        """The blocking boto3 client (untyped), for streaming work that already runs in a worker thread."""
        return self._client

    async def put_json(self, bucket: str, key: str, document: Any, read_back_soon: bool = False) -> str:
        """Stores the document; returns its digest, for a reference that reads it back."""
        body = json.dumps(document, ensure_ascii=False, indent=2).encode()
        return await self.put_bytes(bucket, key, body, "application/json", read_back_soon)

    async def put_bytes(
        self, bucket: str, key: str, body: bytes, content_type: str, read_back_soon: bool = False
    ) -> str:
        with _naming(bucket, key):
            await asyncio.to_thread(self._client.put_object, Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        digest = body_digest(body)
        if read_back_soon:
            self._read_back_soon.keep(bucket, key, digest, body)
        return digest

    async def delete_keys(self, bucket: str, keys: list[str]) -> None:
        """Delete these objects; one that does not exist is no error."""
        for start in range(0, len(keys), 1000):  # S3 takes at most 1,000 keys per request
            chunk = keys[start : start + 1000]
            with _naming(bucket, chunk[0]):
                response = await asyncio.to_thread(
                    self._client.delete_objects,
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            if response.get("Errors"):
                error = response["Errors"][0]
                raise OSError(
                    f"S3 did not delete s3://{bucket}/{error['Key']}: {error.get('Code')} {error.get('Message')}"
                )

    async def check_bucket(self, bucket: str) -> None:
        """Raise unless the bucket exists and S3 answers: one cheap call before long work that needs it."""
        with _naming(bucket, ""):
            await asyncio.to_thread(self._client.head_bucket, Bucket=bucket)

    async def get_bytes(self, bucket: str, key: str, digest: str | None = None) -> bytes:
        """The object's body; given the digest its writer returned, a body this process wrote
        with read_back_soon comes from memory."""
        kept = self._read_back_soon.take(bucket, key, digest) if digest else None
        if kept is not None:
            return kept

        def read() -> bytes:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()

        with _naming(bucket, key):
            return await asyncio.to_thread(read)  # one thread hop, not one for the call and one for the body

    async def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under a prefix (all pages)."""
        paginator = self._client.get_paginator("list_objects_v2")

        def collect() -> list[str]:
            return [o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]

        return await asyncio.to_thread(collect)

    async def get_bytes_or_none(self, bucket: str, key: str) -> bytes | None:
        try:
            return await self.get_bytes(bucket, key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
