"""Past exports as the workspace shows them: the user's own (an admin's: everyone's), each with its
progress while it runs, its dataset card and manifest, and its files as one archive."""

from __future__ import annotations

import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, true
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities.export import CARD_FILE, MANIFEST_FILE, parse_s3_location
from brightrun.storage import Storage
from models.enums import ExportStatus
from models.messages import ExportProgress
from models.tables import Export
from service.access import NotFoundError, Owner
from service.batches import parse_uuid
from workflows.export import ExportWorkflow, export_workflow_id

EXPORTS_LISTED = 50


class ExportListing(BaseModel):
    export_id: uuid.UUID
    created_by: str
    status: ExportStatus
    format: str
    location: str
    count: int
    splits: dict[str, Any]
    jobs: list[str]
    error_message: str | None
    created_at: datetime
    completed_at: datetime | None


def _scope(owner: Owner) -> Any:
    return true() if owner.admin else Export.created_by == owner.user


def _listing(row: Export) -> ExportListing:
    return ExportListing(
        export_id=row.id, created_by=row.created_by, status=ExportStatus(row.status), format=row.format,
        location=row.location, count=row.conversation_count, splits=row.split_counts,
        jobs=[str(job) for job in row.selection.get("job_ids", [])], error_message=row.error_message,
        created_at=row.created_at, completed_at=row.completed_at,
    )


async def list_exports(sessions: async_sessionmaker, owner: Owner, limit: int = EXPORTS_LISTED) -> list[ExportListing]:
    """Newest first."""
    async with sessions() as session:
        rows = (await session.scalars(
            select(Export).where(_scope(owner)).order_by(Export.created_at.desc(), Export.id).limit(limit)
        )).all()
    return [_listing(row) for row in rows]


async def owned_export(sessions: async_sessionmaker, owner: Owner, export_ref: str) -> ExportListing:
    export_id = parse_uuid(export_ref, "export id")
    async with sessions() as session:
        row = await session.scalar(select(Export).where(Export.id == export_id, _scope(owner)))
    if row is None:
        raise NotFoundError(f"export {export_ref} not found")
    return _listing(row)


async def export_progress(client: Client | None, export_id: uuid.UUID) -> ExportProgress | None:
    """The running export's own count of what it has written; None when it does not answer."""
    if client is None:
        return None
    handle = client.get_workflow_handle(export_workflow_id(export_id))
    try:
        return await handle.query(ExportWorkflow.progress, rpc_timeout=timedelta(seconds=5))
    except (RPCError, WorkflowQueryFailedError):
        return None


async def export_document(storage: Storage, export: ExportListing, name: str) -> str | None:
    """The export's dataset card or manifest, as text; None before it is written (or off S3)."""
    if name not in (CARD_FILE, MANIFEST_FILE):
        raise NotFoundError(f"export {export.export_id} has no document {name!r}")
    where = parse_s3_location(export.location)
    if where is None or export.status != ExportStatus.COMPLETED:
        return None
    body = await storage.get_bytes_or_none(where[0], f"{where[1]}/{name}")
    return body.decode() if body is not None else None


# How much of an export file the archive reads from S3 at a time.
ARCHIVE_READ_BYTES = 2**20


async def export_archive(storage: Storage, export: ExportListing) -> Iterator[bytes]:
    """Every file of a completed export on S3 as one zip, paths relative to its location
    (`load_dataset` reads the unpacked directory), in chunks as it is packed: a 100,000-
    conversation export never sits in memory whole. The iterator blocks on S3 (a server runs it
    in a worker thread)."""
    where = parse_s3_location(export.location)
    if where is None or export.status != ExportStatus.COMPLETED:
        raise NotFoundError(f"export {export.export_id} has no files to download (it is {export.status.value}"
                            f"{'' if where else ', in a directory of the worker'})")
    bucket, prefix = where
    keys = sorted(await storage.list_keys(bucket, f"{prefix}/"))
    return _zipped(storage, bucket, prefix, keys)


class _Outbox:
    """Where the zip writes: what it wrote since it was last emptied (the zip needs no seek, as
    it writes each file's sizes after its data)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def empty(self) -> bytes:
        written = b"".join(self._chunks)
        self._chunks.clear()
        return written


def _zipped(storage: Storage, bucket: str, prefix: str, keys: list[str]) -> Iterator[bytes]:
    outbox = _Outbox()
    with zipfile.ZipFile(outbox, "w", zipfile.ZIP_DEFLATED) as packed:
        for key in keys:
            body = storage.client.get_object(Bucket=bucket, Key=key)["Body"]
            # zip64: a file's size is unknown until it is read, and may pass 2 GiB.
            with packed.open(key.removeprefix(f"{prefix}/"), "w", force_zip64=True) as member:
                for chunk in body.iter_chunks(ARCHIVE_READ_BYTES):
                    member.write(chunk)
                    if written := outbox.empty():
                        yield written
    yield outbox.empty()
