"""Exports: start one (a job or a selection, with format, splits and seed) through the same
service call as `starter.py export`, follow its progress, read its card and manifest, and
download its dataset as one archive. The workspace exports to S3, under the user's own prefix."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from activities.export import CARD_FILE, MANIFEST_FILE
from models.enums import ExportFormat, ReviewStatus
from service import batches
from service import export as exports
from service.batches import BatchInputError
from service.exports_view import export_archive, export_document, export_progress, list_exports, owned_export
from web.api import JOBS_LISTED
from web.auth import ApiUser, CheckedForm, PageUser
from web.rendering import render
from web.workspace import Workspace, workspace

router = APIRouter()
Ws = Annotated[Workspace, Depends(workspace)]


@router.get("/exports")
async def exports_page(
    request: Request, ws: Ws, user: PageUser, job: str = "", min_quality: str = "", min_judge_score: str = ""
) -> Response:
    return render(
        request,
        "exports.html",
        {
            "user": user,
            "exports": await list_exports(ws.sessions, user.owner),
            "jobs": await batches.list_jobs(ws.sessions, limit=JOBS_LISTED, visible=user.owner.jobs()),
            "chosen_job": job,
            "min_quality": min_quality,
            "min_judge_score": min_judge_score,
            "formats": list(ExportFormat),
        },
    )


@router.post("/exports")
async def start(ws: Ws, user: PageUser, form: CheckedForm) -> Response:
    job, min_quality = str(form.get("job") or ""), str(form.get("min_quality") or "").strip()
    min_judge_score = str(form.get("min_judge_score") or "").strip()
    try:
        request = exports.ExportRequest(
            owner=user.owner,
            out=f"s3://{ws.settings.conversation_bucket}/exports/{user.name}/{uuid.uuid4()}",
            jobs=(job,) if job else (),
            review_status=ReviewStatus(str(form.get("status") or ReviewStatus.APPROVED.value)),
            min_quality=float(min_quality) if min_quality else None,
            min_judge_score=float(min_judge_score) if min_judge_score else None,
            format=ExportFormat(str(form.get("format") or ExportFormat.MESSAGES.value)),
            split=str(form.get("split") or "train=1"),
            seed=int(str(form.get("seed") or "0")),
            allow_stand_in=bool(form.get("allow_stand_in")),
        )
    except ValueError as exc:
        raise BatchInputError(f"the export form: {exc}") from None
    export_id = await exports.start_export(ws.sessions, await ws.temporal(), ws.settings, request)
    return RedirectResponse(f"/exports/{export_id}", status_code=303)


@router.get("/exports/{export_id}")
async def export_page(request: Request, ws: Ws, user: PageUser, export_id: str) -> Response:
    export = await owned_export(ws.sessions, user.owner, export_id)
    return render(
        request,
        "export.html",
        {
            "user": user,
            "export": export,
            "progress": await export_progress(await ws.temporal_or_none(), export.export_id),
            "card": await export_document(ws.storage, export, CARD_FILE),
            "manifest": await export_document(ws.storage, export, MANIFEST_FILE),
        },
    )


@router.get("/exports/{export_id}/download")
async def download(ws: Ws, user: PageUser, export_id: str) -> Response:
    export = await owned_export(ws.sessions, user.owner, export_id)
    archive = await export_archive(ws.storage, export)
    disposition = f'attachment; filename="brightrun-export-{export.export_id}.zip"'
    return StreamingResponse(archive, media_type="application/zip", headers={"Content-Disposition": disposition})


@router.get("/api/exports/{export_id}")
async def export_api(ws: Ws, user: ApiUser, export_id: str) -> dict[str, Any]:
    """The export's row and, while it runs, its progress (the export page polls it)."""
    export = await owned_export(ws.sessions, user.owner, export_id)
    progress = await export_progress(await ws.temporal_or_none(), export.export_id)
    return {**export.model_dump(mode="json"), "progress": progress.model_dump(mode="json") if progress else None}
