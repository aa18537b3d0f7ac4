"""The JSON API, for scripts (`Authorization: Bearer TOKEN`) and the pages' own polling."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from models.enums import ReviewStatus
from service import batches, review
from web.auth import ApiUser
from web.workspace import Workspace, workspace

router = APIRouter(prefix="/api")
Ws = Annotated[Workspace, Depends(workspace)]

JOBS_LISTED = 200


class ReviewBody(BaseModel):
    decision: ReviewStatus
    reason: str | None = None


@router.get("/jobs")
async def jobs(ws: Ws, user: ApiUser) -> list[dict[str, Any]]:
    """The jobs the user sees, newest first, with their progress, cost and ETA."""
    listed = await batches.list_jobs(ws.sessions, limit=JOBS_LISTED, visible=user.owner.jobs())
    return [job.model_dump(mode="json") for job in listed]


@router.get("/conversations/{conversation_id}")
async def conversation(ws: Ws, user: ApiUser, conversation_id: str) -> dict[str, Any]:
    """What `review show --json` prints, and every decision on it (who, what, when, why)."""
    shown = await review.show_conversation(ws.sessions, ws.storage, user.owner, conversation_id)
    decisions = await review.decisions_of(ws.sessions, user.owner, conversation_id)
    return {**shown, "decisions": [decision.model_dump(mode="json") for decision in decisions]}


@router.post("/conversations/{conversation_id}/review")
async def decide(ws: Ws, user: ApiUser, conversation_id: str, body: ReviewBody) -> dict[str, Any]:
    """Approve or reject the conversation, as `review approve|reject CONV [--reason]` does."""
    result = await review.review(ws.sessions, user.owner, body.decision, review.Selection((conversation_id,)), body.reason)
    return result.model_dump(mode="json")
