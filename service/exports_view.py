"""Past exports as the workspace shows them: the user's own (an admin's: everyone's), each with its
progress while it runs, its dataset card and manifest, and its files as one archive."""

from __future__ import annotations

import io
import uuid
import zipfile
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


async def export_archive(storage: Storage, export: ExportListing) -> bytes:
    """Every file of a completed export on S3 as one zip, paths relative to its location
    (`load_dataset` reads the unpacked directory)."""
    where = parse_s3_location(export.location)
    if where is None or export.status != ExportStatus.COMPLETED:
        raise NotFoundError(f"export {export.export_id} has no files to download (it is {export.status.value}"
                            f"{'' if where else ', in a directory of the worker'})")
    bucket, prefix = where
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as packed:
        for key in sorted(await storage.list_keys(bucket, f"{prefix}/")):
            packed.writestr(key.removeprefix(f"{prefix}/"), await storage.get_bytes(bucket, key))
    return archive.getvalue()
