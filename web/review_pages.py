"""The review queue (one conversation at a time, with keys), a conversation's page with its
decision form, undo, and bulk decisions over a filter after a confirmation showing the count."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData, ImmutableMultiDict

from models.enums import ReviewStatus
from service import review
from service.batches import BatchInputError
from service.catalog import list_catalog
from service.judge import JudgeFilter, JudgeInputError, parse_criterion_bounds, rubric_criteria
from service.near_duplicates import near_duplicate_pair
from service.users import SignedIn
from web.auth import CheckedForm, PageUser, local_path
from web.rendering import render
from web.workspace import Workspace, workspace

router = APIRouter()
Ws = Annotated[Workspace, Depends(workspace)]

DECISIONS_LISTED = 10
# The queue counts its matches up to here (beyond, it says "10000+"): a count reads every row it
# counts, and the bulk confirmation counts exactly.
QUEUE_COUNT_UP_TO = 10_000
# The queue's orders, as its form names them.
QUEUE_SORTS = {"created": "oldest first", "judge-score": "worst judged first", "-judge-score": "best judged first"}
DECISIONS = {"approved": ReviewStatus.APPROVED, "rejected": ReviewStatus.REJECTED}


@dataclass(frozen=True)
class QueueFilter:
    """The queue's filters, as the page's form and links carry them."""

    job: str = ""
    status: str = ReviewStatus.PENDING_REVIEW.value
    min_quality: str = ""
    max_quality: str = ""
    near_duplicates: str = ""
    persona: str = ""
    arc: str = ""
    topic: str = ""
    min_judge_score: str = ""
    max_judge_score: str = ""
    # One criterion of the rubric, within bounds (1-5, inclusive).
    criterion: str = ""
    min_criterion: str = ""
    max_criterion: str = ""
    # The queue's order: a key of review.SORTS (oldest first, worst or best judged first).
    sort: str = "created"

    @classmethod
    def of(cls, values: ImmutableMultiDict[str, Any] | FormData) -> QueueFilter:
        fields = {name: str(values.get(name, default) or "").strip() for name, default in _DEFAULTS.items()}
        return cls(**fields)

    def selection(self) -> review.Selection:
        return review.Selection(
            job=self.job or None,
            status=_status(self.status),
            min_quality=_number(self.min_quality, "minimum quality"),
            max_quality=_number(self.max_quality, "maximum quality"),
            near_duplicates=bool(self.near_duplicates),
            persona=self.persona or None,
            arc=self.arc or None,
            topic=self.topic or None,
            judge=JudgeFilter(
                min_score=_number(self.min_judge_score, "minimum judge score"),
                max_score=_number(self.max_judge_score, "maximum judge score"),
                criteria_min=_criterion_bound(self.criterion, self.min_criterion, "minimum"),
                criteria_max=_criterion_bound(self.criterion, self.max_criterion, "maximum"),
            ),
        )

    def query(self, **extra: str) -> str:
        """The filters (and `extra`) as a query string, without the ones at their defaults (an
        empty status, "any", is not the default "pending" and stays)."""
        changed = {name: value for name, value in vars(self).items() if value != _DEFAULTS[name]}
        return urlencode(changed | extra)

    def export_query(self) -> str:
        """What an export takes of the filters: the job, and the lowest quality and judge score."""
        return urlencode({"job": self.job, "min_quality": self.min_quality, "min_judge_score": self.min_judge_score})


_DEFAULTS = {name: field.default for name, field in QueueFilter.__dataclass_fields__.items()}


def _status(value: str) -> ReviewStatus | None:
    if not value:
        return None  # any status
    try:
        return ReviewStatus(value)
    except ValueError:
        raise BatchInputError(f"status {value!r} is not one of {', '.join(ReviewStatus)}") from None


def _criterion_bound(criterion: str, value: str, what: str) -> tuple[tuple[str, int], ...]:
    """The criterion's bound as the JudgeFilter takes it: none without a criterion or a value."""
    if not criterion or not value:
        return ()
    try:
        return parse_criterion_bounds([f"{criterion}={value}"], f"the {what} criterion score")
    except JudgeInputError as error:
        raise BatchInputError(str(error)) from None


def _number(value: str, what: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise BatchInputError(f"the {what} {value!r} is not a number") from None


@router.get("/review")
async def queue(request: Request, ws: Ws, user: PageUser, at: str = "", before: str = "", done: str = "") -> Response:
    """The first conversation of the filter at or after `at` (or the last one before `before`)."""
    filters = QueueFilter.of(request.query_params)
    selection = filters.selection()
    position = review.Position(at=at or None, before=before or None)
    # Going forward, the same page holds the next conversation too.
    listed = await review.list_conversations(
        ws.sessions, user.owner, selection, limit=1 if before else 2, position=position, sort=filters.sort
    )
    current = listed[0] if listed else None
    if current is None and before:
        return RedirectResponse(f"/review?{filters.query()}", status_code=303)  # nothing before: the start
    # What the page shows besides the conversation reads other rows: asked for at once.
    pending = replace(selection, status=ReviewStatus.PENDING_REVIEW)
    counted = [selection] if selection == pending else [selection, pending]  # the queue's default: one count
    catalog, criteria, sidebar, *counts = await asyncio.gather(
        list_catalog(ws.sessions),
        rubric_criteria(ws.sessions),
        _sidebar(ws, user),
        *(review.count_conversations(ws.sessions, user.owner, each, QUEUE_COUNT_UP_TO) for each in counted),
    )
    count, pending_count = counts[0], counts[-1]
    context: dict[str, Any] = {
        "user": user, "filters": filters, "done": done, "catalog": catalog, "criteria": criteria,
        "sorts": QUEUE_SORTS, "count": count,
        "pending_count": pending_count, "count_up_to": QUEUE_COUNT_UP_TO, **sidebar,
    }
    if current is None:
        return render(request, "review.html", {"shown": None, **context})
    showing = review.show_conversation(ws.sessions, ws.storage, user.owner, str(current.conversation_id))
    if before:
        here = review.Position(at=str(current.conversation_id))
        following, shown = await asyncio.gather(
            review.list_conversations(ws.sessions, user.owner, selection, limit=2, position=here, sort=filters.sort),
            showing,
        )
    else:
        following, shown = listed, await showing
    return render(
        request,
        "review.html",
        {
            "shown": shown,
            "pair": await near_duplicate_pair(ws.sessions, ws.storage, user.owner, shown),
            "next_url": f"/review?{filters.query(at=str(following[1].conversation_id))}" if len(following) > 1 else None,
            "previous_url": f"/review?{filters.query(before=str(current.conversation_id))}",
            "return_to": f"/review?{filters.query(at=str(current.conversation_id))}",
            **context,
        },
    )


async def _sidebar(ws: Workspace, user: SignedIn) -> dict[str, Any]:
    decisions, reasons = await asyncio.gather(
        review.recent_decisions(ws.sessions, user.owner, DECISIONS_LISTED), review.recent_reasons(ws.sessions, user.owner)
    )
    return {"decisions": decisions, "reasons": reasons}


@router.get("/conversations/{conversation_id}")
async def conversation_page(request: Request, ws: Ws, user: PageUser, conversation_id: str) -> Response:
    shown = await review.show_conversation(ws.sessions, ws.storage, user.owner, conversation_id)
    return render(
        request,
        "conversation.html",
        {
            "user": user,
            "shown": shown,
            "pair": await near_duplicate_pair(ws.sessions, ws.storage, user.owner, shown),
            "history": await review.decisions_of(ws.sessions, user.owner, conversation_id),
            "return_to": f"/conversations/{shown['conversation_id']}",
            **await _sidebar(ws, user),
        },
    )


@router.post("/conversations/{conversation_id}/review")
async def decide(ws: Ws, user: PageUser, conversation_id: str, form: CheckedForm) -> Response:
    """Approve or reject one conversation (the same call as `review approve|reject CONV`)."""
    await review.review(
        ws.sessions, user.owner, _decision(form.get("decision")), review.Selection((conversation_id,)),
        _text(form.get("reason")),
    )
    return RedirectResponse(_return_to(form, f"/conversations/{conversation_id}"), status_code=303)


@router.post("/review/undo")
async def undo(ws: Ws, user: PageUser, form: CheckedForm) -> Response:
    """Take back the latest decision of this user: the queue shows its conversation again."""
    undone = await review.undo_last(ws.sessions, user.owner)
    target = _return_to(form, "/review")
    if undone is not None and target.startswith("/review"):
        filters = QueueFilter.of(form)
        target = f"/review?{filters.query(at=str(undone.conversation_id))}"
    return RedirectResponse(target, status_code=303)


@router.get("/review/bulk")
async def bulk_confirmation(request: Request, ws: Ws, user: PageUser, decision: str) -> Response:
    """What a bulk decision over the filter takes (its pending conversations), before it is made."""
    filters = QueueFilter.of(request.query_params)
    selection = replace(filters.selection(), status=ReviewStatus.PENDING_REVIEW)
    count = await review.count_conversations(ws.sessions, user.owner, selection)
    return render(
        request, "bulk.html",
        {"user": user, "filters": filters, "decision": _decision(decision), "count": count, **await _sidebar(ws, user)},
    )


@router.post("/review/bulk")
async def bulk(ws: Ws, user: PageUser, form: CheckedForm) -> Response:
    """Approve or reject every pending conversation of the filter (the CLI's bulk forms)."""
    filters = QueueFilter.of(form)
    selection = replace(filters.selection(), status=None)
    if not selection.names_anything:
        selection = replace(selection, all_pending=True)
    result = await review.review(ws.sessions, user.owner, _decision(form.get("decision")), selection, _text(form.get("reason")))
    return RedirectResponse(f"/review?{filters.query(done=f'{result.action.value}:{result.changed}')}", status_code=303)


def _decision(value: object) -> ReviewStatus:
    if not isinstance(value, str) or value not in DECISIONS:
        raise BatchInputError("decision must be approved or rejected")
    return DECISIONS[value]


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _return_to(form: FormData, default: str) -> str:
    """Back to the page the form was on."""
    return local_path(form.get("return_to"), default)
