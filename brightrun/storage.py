"""S3 storage through boto3. boto3 blocks, so every call runs in a worker thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
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


class Storage:
    def __init__(self, settings: Settings) -> None:
        self.conversation_bucket = settings.conversation_bucket
        self.log_bucket = settings.log_bucket
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

    async def put_json(self, bucket: str, key: str, document: Any) -> None:
        body = json.dumps(document, ensure_ascii=False, indent=2).encode()
        await self.put_bytes(bucket, key, body, "application/json")

    async def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        with _naming(bucket, key):
            await asyncio.to_thread(self._client.put_object, Bucket=bucket, Key=key, Body=body, ContentType=content_type)

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

    async def get_bytes(self, bucket: str, key: str) -> bytes:
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
