"""Review of generated conversations: list, show, approve and reject, one by one or in bulk.

Every action belongs to a user (`Owner`): it sees and changes the conversations of that user's
jobs and of the jobs shared with them, unless it is an admin's (service/access.py). Bulk forms
change only conversations still pending review, so a bulk rule never overturns a person's
decision; naming conversations changes them whatever their state. Every change is recorded in
`review_decisions` (who, what, when, why), from the workspace and the command line alike.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Select,
    Text,
    and_,
    case,
    desc,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import SQLCoreOperations

from activities.export import UNKNOWN_PROVIDER
from brightrun.storage import Storage, enriched_conversation_key
from models.enums import ReviewStatus
from models.judge import MAX_SCORE, MIN_SCORE
from models.tables import Conversation, EmotionalArc, Persona, PromptTemplate, ReviewDecision, TrainingTopic
from service.access import NotFoundError, Owner, visible_job
from service.batches import BatchInputError, parse_uuid
from service.ids import IdKind, resolve_id
from service.judge import JudgeFilter, JudgeInputError, verdict_history, verdict_summary

LIST_LIMIT_MAX = 10_000


class ReviewListing(BaseModel):
    """One line of `review list`."""

    conversation_id: uuid.UUID
    job_id: uuid.UUID
    user: str
    title: str
    tier: str
    persona: str
    emotional_arc: str
    training_topic: str
    template: str
    review_status: ReviewStatus
    quality_score: float | None
    enriched: bool
    near_duplicate: bool
    near_duplicate_of: uuid.UUID | None
    failed_checks: list[str]
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_reason: str | None
    # Claude as judge: the overall score (1-5) and each criterion's, and the rubric that gave them.
    judge_score: float | None = None
    judge_scores: dict[str, int] | None = None
    judge_rubric: str | None = None
    final_key: str
    raw_key: str
    enriched_key: str | None


@dataclass(frozen=True)
class Selection:
    """Which conversations a bulk review action (or a listing) takes."""

    conversation_ids: tuple[str, ...] = ()
    job: str | None = None
    status: ReviewStatus | None = None
    min_quality: float | None = None
    max_quality: float | None = None
    # Catalog ids: only conversations of this persona, emotional arc or training topic.
    persona: str | None = None
    arc: str | None = None
    topic: str | None = None
    # Bulk rejection: near-duplicates, or under this quality (either one, when both are given).
    near_duplicates: bool = False
    below_quality: float | None = None
    all_pending: bool = False
    judge: JudgeFilter = field(default_factory=JudgeFilter)

    @property
    def is_bulk(self) -> bool:
        return not self.conversation_ids

    @property
    def names_anything(self) -> bool:
        return bool(
            self.conversation_ids or self.job or self.all_pending or self.near_duplicates or self.persona or self.arc
            or self.topic or self.min_quality is not None or self.max_quality is not None or self.below_quality is not None
            or self.judge.names_anything
        )


class ReviewResult(BaseModel):
    action: ReviewStatus
    changed: int
    unchanged: int
    conversation_ids: list[uuid.UUID]


def _check_quality(value: float | None, option: str) -> None:
    if value is not None and not 0 <= value <= 1:
        raise BatchInputError(f"{option} must be between 0 and 1, got {value}")


async def owned_job(sessions: async_sessionmaker, owner: Owner, job_ref: str) -> uuid.UUID:
    return (await visible_job(sessions, owner, job_ref)).id


async def _owned_conversations(sessions: async_sessionmaker, owner: Owner, refs: tuple[str, ...]) -> list[uuid.UUID]:
    """Business keys of the named conversations; every one must exist and be the owner's to see."""
    async with sessions() as session:
        ids = list(dict.fromkeys([await resolve_id(session, IdKind.CONVERSATION, ref, owner.scope()) for ref in refs]))
        found = set(
            (await session.scalars(select(Conversation.conversation_id).where(
                Conversation.conversation_id.in_(ids), owner.scope()
            ))).all()
        )
    for conversation_id in ids:
        if conversation_id not in found:
            raise NotFoundError(f"conversation {conversation_id} not found")
    return ids


async def _conditions(sessions: async_sessionmaker, owner: Owner, selection: Selection) -> list[ColumnElement[bool]]:
    _check_quality(selection.min_quality, "--min-quality")
    _check_quality(selection.max_quality, "--max-quality")
    _check_quality(selection.below_quality, "--below-quality")
    # A job the owner sees shows them all its conversations: with one, the rows need no check of
    # their own (and a count over the job reads only the queue's index).
    conditions = [] if selection.job else [owner.scope()]
    if selection.conversation_ids:
        ids = await _owned_conversations(sessions, owner, selection.conversation_ids)
        conditions.append(Conversation.conversation_id.in_(ids))
    if selection.job:
        conditions.append(Conversation.batch_job_id == await owned_job(sessions, owner, selection.job))
    if selection.status:
        conditions.append(Conversation.review_status == selection.status.value)
    if selection.min_quality is not None:
        conditions.append(Conversation.quality_score >= selection.min_quality)
    if selection.max_quality is not None:
        conditions.append(Conversation.quality_score <= selection.max_quality)
    for column, ref, what in (
        (Conversation.persona_id, selection.persona, "persona id"),
        (Conversation.emotional_arc_id, selection.arc, "emotional arc id"),
        (Conversation.training_topic_id, selection.topic, "training topic id"),
    ):
        if ref:
            conditions.append(column == parse_uuid(ref, what))
    try:
        conditions += selection.judge.conditions()
    except JudgeInputError as error:
        raise BatchInputError(str(error)) from None
    flagged: list[ColumnExpressionArgument[bool]] = []
    if selection.near_duplicates:
        flagged.append(Conversation.near_duplicate)
    if selection.below_quality is not None:
        flagged.append(Conversation.quality_score < selection.below_quality)
    if flagged:
        conditions.append(or_(*flagged))
    return conditions


@dataclass(frozen=True)
class Position:
    """Where a page of a listing starts, in its order: at or after a conversation, or (going
    back) just before one. Keyset pagination: any page is one index range scan away, however deep
    in 100,000 conversations it is."""

    at: str | None = None
    before: str | None = None


# A judge score's key in a judge-score order: the score (negated for best first), with the
# conversations not judged after every judged one (one above the highest key) rather than NULL,
# which a row comparison cannot step over. The constant is inline SQL, not a parameter: the
# planner matches the expression to its index (migration 0020) only so.
WORST_FIRST_KEY = func.coalesce(Conversation.judge_score, literal_column(str(MAX_SCORE + 1)))
BEST_FIRST_KEY = func.coalesce(-Conversation.judge_score, literal_column(str(-MIN_SCORE + 1)))


# `review list --sort` and the queue's order: oldest first, or by the judge's overall score (worst
# or best first, conversations not judged last), then oldest first. A conversation's key in the
# order is these columns, ascending: the keyset a position pages from.
SORTS: dict[str, tuple[SQLCoreOperations[Any], ...]] = {
    "created": (Conversation.created_at, Conversation.id),
    "judge-score": (WORST_FIRST_KEY, Conversation.created_at, Conversation.id),
    "-judge-score": (BEST_FIRST_KEY, Conversation.created_at, Conversation.id),
}


async def list_conversations(
    sessions: async_sessionmaker,
    owner: Owner,
    selection: Selection,
    limit: int = 100,
    position: Position = Position(),
    sort: str = "created",
) -> list[ReviewListing]:
    """Conversations in the order `sort` names (oldest first by default) from `position`, with
    their quality, verdict, flags and storage keys."""
    if sort not in SORTS:
        raise BatchInputError(f"--sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise BatchInputError(f"--limit must be between 1 and {LIST_LIMIT_MAX}, got {limit}")
    conditions = await _conditions(sessions, owner, selection)
    key_columns = SORTS[sort]
    order: tuple[Any, ...] = key_columns
    if position.at or position.before:
        key = await _position_key(sessions, owner, position.at or position.before or "", key_columns)
        if position.before:
            conditions.append(tuple_(*key_columns) < key)
            order = tuple(desc(column) for column in key_columns)
        else:
            conditions.append(tuple_(*key_columns) >= key)
    query = (
        select(Conversation, Persona.name, EmotionalArc.name, TrainingTopic.name, PromptTemplate.name)
        .join(Persona, Persona.id == Conversation.persona_id)
        .join(EmotionalArc, EmotionalArc.id == Conversation.emotional_arc_id)
        .join(TrainingTopic, TrainingTopic.id == Conversation.training_topic_id)
        .join(PromptTemplate, PromptTemplate.id == Conversation.template_id)
        .where(and_(*conditions))
        .order_by(*order)
        .limit(limit)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    listed = [_listing(row, *names) for row, *names in rows]
    return listed[::-1] if position.before else listed


async def _position_key(
    sessions: async_sessionmaker, owner: Owner, conversation_ref: str, key_columns: tuple[SQLCoreOperations[Any], ...]
) -> Any:
    """The key a position's conversation sorts by, in the listing's order."""
    async with sessions() as session:
        conversation_id = await resolve_id(session, IdKind.CONVERSATION, conversation_ref, owner.scope())
        key = (await session.execute(
            select(*key_columns).where(Conversation.conversation_id == conversation_id, owner.scope())
        )).one_or_none()
    if key is None:
        raise NotFoundError(f"conversation {conversation_ref} not found")
    return tuple_(*(literal(value) for value in key))


async def count_conversations(
    sessions: async_sessionmaker, owner: Owner, selection: Selection, up_to: int | None = None
) -> int:
    """How many conversations the selection takes (what a bulk action over it is confirmed with);
    with `up_to`, counting stops there: a page that only says "10,000+" reads no more rows."""
    conditions = await _conditions(sessions, owner, selection)
    selected = select(Conversation.id).where(*conditions)
    if up_to is not None:
        selected = selected.limit(up_to)
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(selected.subquery())) or 0


def _listing(row: Conversation, persona: str, arc: str, topic: str, template: str) -> ReviewListing:
    enriched = row.enriched_at is not None
    return ReviewListing(
        conversation_id=row.conversation_id,
        job_id=row.batch_job_id,
        user=row.created_by,
        title=row.title,
        tier=row.tier,
        persona=persona,
        emotional_arc=arc,
        training_topic=topic,
        template=template,
        review_status=ReviewStatus(row.review_status),
        quality_score=row.quality_score,
        enriched=enriched,
        near_duplicate=row.near_duplicate,
        near_duplicate_of=row.near_duplicate_of,
        failed_checks=[check["check"] for check in row.failed_checks],
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_reason=row.review_reason,
        judge_score=row.judge_score,
        judge_scores={key: c["score"] for key, c in row.judge_scores.items()} if row.judge_scores else None,
        judge_rubric=f"{row.judge_rubric} v{row.judge_rubric_version}" if row.judge_rubric else None,
        final_key=row.final_storage_path,
        raw_key=row.raw_storage_path,
        enriched_key=enriched_conversation_key(row.created_by, row.conversation_id) if enriched else None,
    )


async def show_conversation(
    sessions: async_sessionmaker, storage: Storage, owner: Owner, conversation_ref: str
) -> dict[str, Any]:
    """One conversation: its listing, its enrichment, and its turns from the final file."""
    listed = await list_conversations(sessions, owner, Selection(conversation_ids=(conversation_ref,)), limit=1)
    listing = listed[0]
    async with sessions() as session:
        row = await session.scalar(select(Conversation).where(Conversation.conversation_id == listing.conversation_id))
        history = await verdict_history(session, row.id)
    document = json.loads(await storage.get_bytes(storage.conversation_bucket, listing.final_key))
    return {
        **listing.model_dump(mode="json"),
        "quality_parts": row.quality_parts or document.get("quality"),
        "failed_checks": row.failed_checks,
        "provenance": row.provenance,
        "counts": {
            "user_turns": row.user_turns,
            "assistant_turns": row.assistant_turns,
            "user_tokens": row.user_tokens,
            "assistant_tokens": row.assistant_tokens,
        },
        "content_hash": row.content_hash,
        "model": row.generation_metadata.get("model"),
        # Who wrote it: an offline stand-in's text is placeholder, never training data.
        "provider": row.provider or UNKNOWN_PROVIDER,
        "provider_host": row.provider_host,
        # The latest verdict with each criterion's reason, and every verdict before it.
        "judge": verdict_summary(row),
        "judge_history": history,
        "turns": document["turns"],
    }


async def review(
    sessions: async_sessionmaker,
    owner: Owner,
    action: ReviewStatus,
    selection: Selection,
    reason: str | None = None,
) -> ReviewResult:
    """Approve or reject the selected conversations, recording who, when and (for a rejection) why."""
    if action == ReviewStatus.PENDING_REVIEW:
        raise BatchInputError("a review either approves or rejects")
    if not selection.names_anything:
        raise BatchInputError(
            "name conversations, or select them in bulk with --job, --min-quality, --all-pending, "
            "--near-duplicates, --below-quality or a judge score (--min-judge-score, --max-judge-score)"
        )
    if selection.conversation_ids and (selection.all_pending or selection.job):
        raise BatchInputError("give conversation ids or a bulk selection, not both")
    automatic_reason = selection.is_bulk and (
        selection.near_duplicates or selection.below_quality is not None or selection.judge.names_anything
    )
    if action == ReviewStatus.REJECTED and not reason and not automatic_reason:
        raise BatchInputError("a rejection needs --reason TEXT (or --near-duplicates / --below-quality, which give one)")
    conditions = await _conditions(sessions, owner, selection)
    if selection.is_bulk:
        conditions.append(Conversation.review_status == ReviewStatus.PENDING_REVIEW.value)
    selected = and_(*conditions)
    # The self-join's row is the one before the update: its status is the verdict replaced.
    before = aliased(Conversation)
    async with sessions.begin() as session:
        total = await session.scalar(select(func.count()).select_from(Conversation).where(selected))
        changed = (
            await session.execute(
                update(Conversation)
                .where(selected, Conversation.id == before.id, Conversation.review_status != action.value)
                .values(
                    review_status=action.value,
                    reviewed_by=owner.user,
                    reviewed_at=func.now(),
                    review_reason=_reason(action, reason, selection),
                    updated_at=func.now(),
                )
                .returning(Conversation.id, Conversation.conversation_id, before.review_status, Conversation.review_reason)
            )
        ).all()
        if changed:
            await session.execute(
                insert(ReviewDecision),
                [
                    {"conversation_id": row_id, "decision": action.value, "previous": previous, "reason": why,
                     "decided_by": owner.user}
                    for row_id, _, previous, why in changed
                ],
            )
    return ReviewResult(
        action=action, changed=len(changed), unchanged=total - len(changed),
        conversation_ids=sorted(conversation_id for _, conversation_id, _, _ in changed),
    )


def _reason(action: ReviewStatus, reason: str | None, selection: Selection) -> ColumnElement[Any]:
    """The given reason (optional for an approval); a bulk rejection without one says which rule it met."""
    if reason or action == ReviewStatus.APPROVED:
        return literal(reason, type_=Text)
    rules: list[tuple[ColumnExpressionArgument[bool], ColumnExpressionArgument[Any]]] = []
    if selection.near_duplicates:
        rules.append((Conversation.near_duplicate, func.concat("near-duplicate of conversation ", Conversation.near_duplicate_of)))
    if selection.below_quality is not None:
        rules.append((Conversation.quality_score < selection.below_quality, literal(f"quality under {selection.below_quality}")))
    if selection.judge.names_anything:
        rules.append((
            Conversation.judge_score.is_not(None),
            func.concat("judge score ", Conversation.judge_score, " (", Conversation.judge_rubric, " v",
                        Conversation.judge_rubric_version, ")"),
        ))
    return case(*rules, else_=literal(None, type_=Text))


class Decision(BaseModel):
    """One review decision, as the workspace lists it."""

    decision_id: int
    conversation_id: uuid.UUID
    title: str
    decision: ReviewStatus
    previous: ReviewStatus
    reason: str | None
    decided_by: str
    decided_at: datetime
    # The decision this one took back (it is an undo), and whether a later undo took this one back.
    undoes: int | None
    undone: bool


def _decision(row: ReviewDecision, conversation_id: uuid.UUID, title: str, undone: bool) -> Decision:
    return Decision(
        decision_id=row.id, conversation_id=conversation_id, title=title, decision=ReviewStatus(row.decision),
        previous=ReviewStatus(row.previous), reason=row.reason, decided_by=row.decided_by,
        decided_at=row.decided_at, undoes=row.undoes, undone=undone,
    )


def _undone() -> Select[int | None]:
    return select(ReviewDecision.undoes).where(ReviewDecision.undoes.is_not(None))


async def recent_decisions(sessions: async_sessionmaker, owner: Owner, limit: int = 10) -> list[Decision]:
    """The owner's own latest decisions, newest first (undos are listed, as what they put back)."""
    undone = _undone()
    query = (
        select(ReviewDecision, Conversation.conversation_id, Conversation.title, ReviewDecision.id.in_(undone))
        .join(Conversation, Conversation.id == ReviewDecision.conversation_id)
        .where(ReviewDecision.decided_by == owner.user, owner.scope())
        .order_by(ReviewDecision.id.desc())
        .limit(limit)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return [_decision(row, conversation_id, title, was_undone) for row, conversation_id, title, was_undone in rows]


async def decisions_of(sessions: async_sessionmaker, owner: Owner, conversation_ref: str) -> list[Decision]:
    """Every decision on one conversation, oldest first: who decided what and when."""
    ids = await _owned_conversations(sessions, owner, (conversation_ref,))
    undone = _undone()
    query = (
        select(ReviewDecision, Conversation.conversation_id, Conversation.title, ReviewDecision.id.in_(undone))
        .join(Conversation, Conversation.id == ReviewDecision.conversation_id)
        .where(Conversation.conversation_id == ids[0])
        .order_by(ReviewDecision.id)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return [_decision(row, conversation_id, title, was_undone) for row, conversation_id, title, was_undone in rows]


async def undo_last(sessions: async_sessionmaker, owner: Owner) -> Decision | None:
    """Take back the owner's latest decision not yet undone, if the conversation still shows it:
    the conversation gets the verdict it had before (and who gave it). None: nothing to undo."""
    undone = _undone()
    async with sessions.begin() as session:
        last = (
            await session.execute(
                select(ReviewDecision, Conversation)
                .join(Conversation, Conversation.id == ReviewDecision.conversation_id)
                .where(
                    ReviewDecision.decided_by == owner.user, ReviewDecision.undoes.is_(None),
                    ReviewDecision.id.not_in(undone), owner.scope(),
                    Conversation.review_status == ReviewDecision.decision,
                )
                .order_by(ReviewDecision.id.desc())
                .limit(1)
                .with_for_update(of=Conversation)
            )
        ).one_or_none()
        if last is None:
            return None
        decision, conversation = last
        earlier = await session.scalar(
            select(ReviewDecision)
            .where(ReviewDecision.conversation_id == conversation.id, ReviewDecision.id < decision.id,
                   ReviewDecision.decision == decision.previous)
            .order_by(ReviewDecision.id.desc())
            .limit(1)
        )
        pending = decision.previous == ReviewStatus.PENDING_REVIEW
        await session.execute(
            update(Conversation).where(Conversation.id == conversation.id).values(
                review_status=decision.previous,
                reviewed_by=None if pending or earlier is None else earlier.decided_by,
                reviewed_at=None if pending or earlier is None else earlier.decided_at,
                review_reason=None if pending or earlier is None else earlier.reason,
                updated_at=func.now(),
            )
        )
        await session.execute(
            insert(ReviewDecision).values(
                conversation_id=conversation.id, decision=decision.previous, previous=decision.decision,
                undoes=decision.id, reason=f"undo of decision {decision.id}", decided_by=owner.user,
            )
        )
    return _decision(decision, conversation.conversation_id, conversation.title, undone=True)


async def recent_reasons(sessions: async_sessionmaker, owner: Owner, limit: int = 8) -> list[str]:
    """The owner's rejection reasons, most recently used first: what a reject offers again."""
    last_used = func.max(ReviewDecision.id)
    query = (
        select(ReviewDecision.reason)
        .where(
            ReviewDecision.decided_by == owner.user, ReviewDecision.decision == ReviewStatus.REJECTED.value,
            ReviewDecision.reason.is_not(None), ReviewDecision.undoes.is_(None),
        )
        .group_by(ReviewDecision.reason)
        .order_by(last_used.desc())
        .limit(limit)
    )
    async with sessions() as session:
        return [reason for reason in (await session.scalars(query)).all() if reason]
