"""The JSON API, for scripts (`Authorization: Bearer TOKEN`) and the pages' own polling."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from service import batches
from web.auth import ApiUser
from web.workspace import Workspace, workspace

router = APIRouter(prefix="/api")
Ws = Annotated[Workspace, Depends(workspace)]

JOBS_LISTED = 200


@router.get("/jobs")
async def jobs(ws: Ws, user: ApiUser) -> list[dict[str, Any]]:
    """The jobs the user sees, newest first, with their progress, cost and ETA."""
    listed = await batches.list_jobs(ws.sessions, limit=JOBS_LISTED, visible=user.owner.jobs())
    return [job.model_dump(mode="json") for job in listed]

