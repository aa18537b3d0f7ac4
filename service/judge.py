"""Claude as judge, for the command line: which rubric a launch judges with, and conversations
selected and shown by their verdicts (review, export)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.judge import MAX_SCORE, MIN_SCORE
from models.messages import JudgePlan
from models.tables import Conversation, ConversationVerdict, JudgeRubric


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
