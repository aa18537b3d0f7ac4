"""Review of generated conversations: list, show, approve and reject, one by one or in bulk.

Every action belongs to a user (`Owner`): it sees and changes that user's conversations only,
unless it is an admin's. Bulk forms change only conversations still pending review, so a bulk
rule never overturns a person's decision; naming conversations changes them whatever their state.
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
    Text,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import async_sessionmaker

from activities.export import UNKNOWN_PROVIDER
from brightrun.storage import Storage, enriched_conversation_key
from models.enums import ReviewStatus
from models.tables import BatchJob, Conversation, EmotionalArc, Persona, TrainingTopic
from service.batches import BatchInputError, parse_uuid, validate_user
from service.judge import JudgeFilter, JudgeInputError, verdict_history, verdict_summary

LIST_LIMIT_MAX = 10_000


@dataclass(frozen=True)
class Owner:
    """Who acts: a user sees and changes their own conversations; an admin everyone's."""

    user: str
    admin: bool = False

    @classmethod
    def of(cls, user: str, admin: bool = False) -> Owner:
        return cls(validate_user(user), admin)

    def scope(self) -> ColumnElement[bool]:
        return true() if self.admin else Conversation.created_by == self.user


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
            self.conversation_ids or self.job or self.all_pending or self.near_duplicates
            or self.min_quality is not None or self.below_quality is not None or self.judge.names_anything
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
    job_id = parse_uuid(job_ref, "job id")
    async with sessions() as session:
        created_by = await session.scalar(select(BatchJob.created_by).where(BatchJob.id == job_id))
    if created_by is None:
        raise BatchInputError(f"job {job_ref} not found")
    if created_by != owner.user and not owner.admin:
        raise BatchInputError(f"job {job_ref} belongs to another user; pass --admin to act on it")
    return job_id


async def _owned_conversations(sessions: async_sessionmaker, owner: Owner, refs: tuple[str, ...]) -> list[uuid.UUID]:
    """Business keys of the named conversations; every one must exist and be the owner's."""
    ids = list(dict.fromkeys(parse_uuid(ref, "conversation id") for ref in refs))
    async with sessions() as session:
        found = dict(
            (await session.execute(select(Conversation.conversation_id, Conversation.created_by).where(
                Conversation.conversation_id.in_(ids)
            ))).all()
        )
    for conversation_id in ids:
        if conversation_id not in found:
            raise BatchInputError(f"conversation {conversation_id} not found")
        if found[conversation_id] != owner.user and not owner.admin:
            raise BatchInputError(f"conversation {conversation_id} belongs to another user; pass --admin to act on it")
    return ids


async def _conditions(sessions: async_sessionmaker, owner: Owner, selection: Selection) -> list[ColumnElement[bool]]:
    _check_quality(selection.min_quality, "--min-quality")
    _check_quality(selection.below_quality, "--below-quality")
    conditions = [owner.scope()]
    if selection.conversation_ids:
        ids = await _owned_conversations(sessions, owner, selection.conversation_ids)
        conditions.append(Conversation.conversation_id.in_(ids))
    if selection.job:
        conditions.append(Conversation.batch_job_id == await owned_job(sessions, owner, selection.job))
    if selection.status:
        conditions.append(Conversation.review_status == selection.status.value)
    if selection.min_quality is not None:
        conditions.append(Conversation.quality_score >= selection.min_quality)
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


# `review list --sort`: oldest first, or by the judge's overall score (worst or best first;
# conversations not judged last).
SORTS = {
    "created": (Conversation.created_at, Conversation.id),
    "judge-score": (Conversation.judge_score.asc().nulls_last(), Conversation.created_at, Conversation.id),
    "-judge-score": (Conversation.judge_score.desc().nulls_last(), Conversation.created_at, Conversation.id),
}


async def list_conversations(
    sessions: async_sessionmaker, owner: Owner, selection: Selection, limit: int = 100, sort: str = "created"
) -> list[ReviewListing]:
    """Conversations (oldest first, or as `sort` says) with their quality, verdict, flags and
    storage keys."""
    if sort not in SORTS:
        raise BatchInputError(f"--sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise BatchInputError(f"--limit must be between 1 and {LIST_LIMIT_MAX}, got {limit}")
    conditions = await _conditions(sessions, owner, selection)
    query = (
        select(Conversation, Persona.name, EmotionalArc.name, TrainingTopic.name)
        .join(Persona, Persona.id == Conversation.persona_id)
        .join(EmotionalArc, EmotionalArc.id == Conversation.emotional_arc_id)
        .join(TrainingTopic, TrainingTopic.id == Conversation.training_topic_id)
        .where(and_(*conditions))
        .order_by(*SORTS[sort])
        .limit(limit)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return [_listing(row, persona, arc, topic) for row, persona, arc, topic in rows]


def _listing(row: Conversation, persona: str, arc: str, topic: str) -> ReviewListing:
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
    async with sessions.begin() as session:
        total = await session.scalar(select(func.count()).select_from(Conversation).where(selected))
        changed = (
            await session.scalars(
                update(Conversation)
                .where(selected, Conversation.review_status != action.value)
                .values(
                    review_status=action.value,
                    reviewed_by=owner.user,
                    reviewed_at=func.now(),
                    review_reason=_reason(action, reason, selection),
                    updated_at=func.now(),
                )
                .returning(Conversation.conversation_id)
            )
        ).all()
    return ReviewResult(action=action, changed=len(changed), unchanged=total - len(changed), conversation_ids=sorted(changed))


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
