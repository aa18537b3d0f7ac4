"""Claude as judge, for the command line: which rubric a launch judges with."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.messages import JudgePlan
from models.tables import JudgeRubric


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
