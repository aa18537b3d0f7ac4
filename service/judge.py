"""Claude as judge, for the command line: which rubric a launch judges with, and conversations
selected and shown by their verdicts (review, export)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import Priority
from temporalio.exceptions import WorkflowAlreadyStartedError

from brightrun.claude_client import claude_call_plan
from brightrun.settings import Settings
from models.enums import ReviewStatus
from models.judge import MAX_SCORE, MIN_SCORE
from models.messages import JudgePlan, JudgeRerunInput
from models.tables import BatchJob, Conversation, ConversationVerdict, JudgeRubric


class JudgeInputError(ValueError):
    """Bad judging input from a person: the message says what to fix."""


async def launch_judge_plan(session: AsyncSession, judge: bool | None, rubric: str | None) -> JudgePlan | None:
    """The rubric version a new job judges with: the latest version of `rubric`, else of the
    catalog's newest rubric. Judging is on when asked (`judge` True, or a rubric named), off when
    refused (`judge` False), and otherwise on exactly when the catalog has a rubric."""
    if judge is False:
        if rubric is not None:
            raise JudgeInputError("--rubric names the rubric to judge with: it cannot go with --no-judge")
        return None
    query = select(JudgeRubric.name, JudgeRubric.version)
    if rubric is not None:
        query = query.where(JudgeRubric.name == rubric)
    latest = (await session.execute(query.order_by(JudgeRubric.version.desc(), JudgeRubric.created_at.desc()).limit(1))).first()
    if latest is None:
        if rubric is not None:
            known = (await session.scalars(select(JudgeRubric.name).distinct().order_by(JudgeRubric.name))).all()
            raise JudgeInputError(f"rubric {rubric!r} is not in the catalog; known: {', '.join(known) or 'none'}")
        if judge:
            raise JudgeInputError("--judge: the catalog has no rubric; load one (python -m devtools.load_catalog)")
        return None
    return JudgePlan(rubric_name=latest.name, rubric_version=latest.version)


@dataclass(frozen=True)
class JudgeFilter:
    """Conversations by their verdict: the overall score within bounds, and per criterion
    (`{criterion: score}`, inclusive). Any bound leaves out the conversations not judged."""

    min_score: float | None = None
    max_score: float | None = None
    criteria_min: tuple[tuple[str, int], ...] = ()
    criteria_max: tuple[tuple[str, int], ...] = ()

    @property
    def names_anything(self) -> bool:
        return self.min_score is not None or self.max_score is not None or bool(self.criteria_min or self.criteria_max)

    def conditions(self) -> list[ColumnElement[bool]]:
        for value, option in ((self.min_score, "--min-judge-score"), (self.max_score, "--max-judge-score")):
            if value is not None and not MIN_SCORE <= value <= MAX_SCORE:
                raise JudgeInputError(f"{option} must be between {MIN_SCORE} and {MAX_SCORE}, got {value}")
        conditions = []
        if self.min_score is not None:
            conditions.append(Conversation.judge_score >= self.min_score)
        if self.max_score is not None:
            conditions.append(Conversation.judge_score <= self.max_score)
        for key, score in self.criteria_min:
            conditions.append(criterion_score(key) >= score)
        for key, score in self.criteria_max:
            conditions.append(criterion_score(key) <= score)
        return conditions


async def rubric_criteria(sessions: async_sessionmaker) -> list[dict[str, str]]:
    """The criteria (key and name) of the catalog's newest rubric: what a reviewer filters by."""
    async with sessions() as session:
        document = await session.scalar(
            select(JudgeRubric.document).order_by(JudgeRubric.version.desc(), JudgeRubric.created_at.desc()).limit(1)
        )
    return [{"key": c["key"], "name": c["name"]} for c in (document or {}).get("criteria", [])]


def criterion_score(key: str) -> ColumnElement[int]:
    return Conversation.judge_scores[key]["score"].as_integer()


def parse_criterion_bounds(values: list[str] | None, option: str) -> tuple[tuple[str, int], ...]:
    """`criterion=score` options (e.g. topic_accuracy=2), checked."""
    bounds = []
    for value in values or ():
        key, _, score = value.partition("=")
        if not key or not score.strip().isdigit() or not MIN_SCORE <= int(score) <= MAX_SCORE:
            raise JudgeInputError(f"{option} takes CRITERION=SCORE with a score {MIN_SCORE}-{MAX_SCORE}, e.g. topic_accuracy=2; got {value!r}")
        bounds.append((key.strip(), int(score)))
    return tuple(bounds)


def verdict_summary(row: Conversation) -> dict[str, Any] | None:
    """A conversation's latest verdict, as review shows it; None when not judged."""
    if row.judge_score is None:
        return None
    return {
        "score": row.judge_score,
        "rubric": row.judge_rubric,
        "rubric_version": row.judge_rubric_version,
        "model": row.judge_model,
        "criteria": row.judge_scores,
        "cost_usd": row.judge_cost_usd,
        "judged_at": row.judged_at.isoformat() if row.judged_at else None,
    }


async def verdict_history(session: AsyncSession, conversation_pk: uuid.UUID) -> list[dict[str, Any]]:
    """Every verdict the conversation was given, oldest first (a rerun keeps the old ones)."""
    rows = await session.scalars(
        select(ConversationVerdict)
        .where(ConversationVerdict.conversation_pk == conversation_pk)
        .order_by(ConversationVerdict.judged_at)
    )
    return [
        {"rubric": r.rubric_name, "rubric_version": r.rubric_version, "score": r.overall, "model": r.judge_model,
         "judged_at": r.judged_at.isoformat()}
        for r in rows
    ]


# --- calibration ------------------------------------------------------------------------------

# The judge "approves" a conversation whose overall score is at least this (`--threshold`).
DEFAULT_APPROVE_FROM = 3.5


class Disagreement(BaseModel):
    conversation_id: uuid.UUID
    human: ReviewStatus
    judge_score: float
    review_reason: str | None
    # The criterion the judge scored lowest (for an approval) or highest (for a rejection), and why.
    criterion: str
    criterion_score: int
    criterion_reason: str


class Calibration(BaseModel):
    """How the judge's scores agree with the human decisions made on a job's conversations."""

    job_id: uuid.UUID
    threshold: float
    decisions: int  # conversations both judged and approved or rejected by a person
    agreement: float | None  # the share where the judge's side of the threshold is the person's decision
    # Confusion counts: the judge's call (score >= threshold: approve) against the person's.
    both_approve: int
    both_reject: int
    judge_approves_human_rejects: int
    judge_rejects_human_approves: int
    mean_score_approved: float | None
    mean_score_rejected: float | None
    # Per criterion, the mean score of approved and of rejected conversations: a criterion that
    # does not separate them is one to rewrite.
    criteria: dict[str, dict[str, float | None]]
    disagreements: list[Disagreement]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


async def calibrate(
    sessions: async_sessionmaker, job_id: uuid.UUID, threshold: float = DEFAULT_APPROVE_FROM, top: int = 10
) -> Calibration:
    if not MIN_SCORE <= threshold <= MAX_SCORE:
        raise JudgeInputError(f"--threshold must be between {MIN_SCORE} and {MAX_SCORE}, got {threshold}")
    decided = (ReviewStatus.APPROVED.value, ReviewStatus.REJECTED.value)
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(Conversation)
                .where(
                    Conversation.batch_job_id == job_id,
                    Conversation.judge_score.is_not(None),
                    Conversation.review_status.in_(decided),
                )
                .order_by(Conversation.conversation_id)
            )
        ).all()
    confusion = {(True, True): 0, (False, False): 0, (True, False): 0, (False, True): 0}  # (judge, human) approve
    by_decision: dict[bool, list[float]] = {True: [], False: []}
    criteria: dict[str, dict[bool, list[float]]] = {}
    disagreements: list[tuple[float, Disagreement]] = []
    for row in rows:
        score = row.judge_score or 0.0
        human = row.review_status == ReviewStatus.APPROVED.value
        judge = score >= threshold
        confusion[(judge, human)] += 1
        by_decision[human].append(score)
        scores = row.judge_scores or {}
        for key, criterion in scores.items():
            criteria.setdefault(key, {True: [], False: []})[human].append(criterion["score"])
        if judge != human and scores:
            # How far the score is on the wrong side: an approval scored 1.2 disagrees more than one at 3.4.
            distance = abs(score - threshold)
            ranked = sorted(scores, key=lambda k: (scores[k]["score"], k))  # ties: by name, for a stable answer
            key = ranked[0] if human else ranked[-1]
            disagreements.append((distance, Disagreement(
                conversation_id=row.conversation_id, human=ReviewStatus(row.review_status), judge_score=score,
                review_reason=row.review_reason, criterion=key, criterion_score=scores[key]["score"],
                criterion_reason=scores[key]["reason"],
            )))
    disagreements.sort(key=lambda pair: (-pair[0], str(pair[1].conversation_id)))
    agreed = confusion[(True, True)] + confusion[(False, False)]
    return Calibration(
        job_id=job_id,
        threshold=threshold,
        decisions=len(rows),
        agreement=round(agreed / len(rows), 4) if rows else None,
        both_approve=confusion[(True, True)],
        both_reject=confusion[(False, False)],
        judge_approves_human_rejects=confusion[(True, False)],
        judge_rejects_human_approves=confusion[(False, True)],
        mean_score_approved=_mean(by_decision[True]),
        mean_score_rejected=_mean(by_decision[False]),
        criteria={key: {"approved": _mean(v[True]), "rejected": _mean(v[False])} for key, v in sorted(criteria.items())},
        disagreements=[d for _, d in disagreements[:top]],
    )


# --- rerun ------------------------------------------------------------------------------------


class RerunStarted(BaseModel):
    job_id: uuid.UUID
    workflow_id: str
    rubric_name: str
    rubric_version: int


async def start_rerun(
    sessions: async_sessionmaker, client: Client, settings: Settings, job_id: uuid.UUID, rubric: str
) -> RerunStarted:
    """Start judging the job's conversations again with the latest version of `rubric`; the
    job's later judging (a retry's items) uses that version too. Started twice, it is one rerun."""
    # The workflow module loads the activities it names: imported by this command only.
    from workflows.judge_rerun import JudgeRerunWorkflow, judge_rerun_workflow_id

    async with sessions.begin() as session:
        plan = await launch_judge_plan(session, True, rubric)
        job = await session.get(BatchJob, job_id, with_for_update=True)
        if job is None or plan is None:
            raise JudgeInputError(f"job {job_id} not found")
        job.shared_parameters = {**job.shared_parameters, "judge": plan.model_dump()}
    workflow_id = judge_rerun_workflow_id(job_id, plan.rubric_name, plan.rubric_version)
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            JudgeRerunWorkflow.run,
            JudgeRerunInput(
                job_id=job_id,
                plan=plan,
                claude=claude_call_plan(settings),
                page_size=settings.item_page_size,
                concurrency=settings.default_concurrency,
                history_event_limit=settings.history_event_limit,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            static_summary=f"judge job {job_id} again with {plan.rubric_name} v{plan.rubric_version}",
            priority=Priority(fairness_key=str(job_id)),
        )
    return RerunStarted(job_id=job_id, workflow_id=workflow_id, rubric_name=plan.rubric_name, rubric_version=plan.rubric_version)
