"""The judge's data steps: before its Claude call, the request (the rubric as the cached system
text, the conversation, the forced verdict tool) is written to storage; after it, the reply is
validated as a verdict (models/judge.py) and recorded on the conversation, in its history and in
the job's counters, once. The call itself is activities/claude.py's, like a generation's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.data_errors import classify_data_errors
from activities.errors import CONVERSATION_NOT_FOUND, INVALID_VERDICT, RUBRIC_NOT_FOUND, permanent
from brightrun.logs import get_logger
from brightrun.storage import Storage, judge_request_key
from models.judge import VERDICT_TOOL, Rubric, VerdictProblem, parse_verdict, transcript, verdict_tool_input
from models.messages import (
    ConversationsToJudge,
    ConversationsToJudgeRequest,
    ConversationToJudge,
    JudgeFailure,
    JudgeInput,
    JudgeVerdict,
    PreparedJudging,
    PrepareJudgingInput,
    RecordVerdictInput,
    TokenUsage,
)
from models.tables import BatchItem, BatchJob, Conversation, ConversationVerdict, JudgeRubric

log = get_logger(__name__)


async def find_rubric(session: AsyncSession, name: str, version: int | None = None) -> Rubric | None:
    """A rubric version from the catalog; its latest for version None."""
    query = select(JudgeRubric.document).where(JudgeRubric.name == name)
    query = query.where(JudgeRubric.version == version) if version is not None else query.order_by(JudgeRubric.version.desc())
    document = await session.scalar(query.limit(1))
    return Rubric.model_validate(document) if document is not None else None


async def rubric_or_refusal(session: AsyncSession, name: str, version: int | None = None) -> Rubric:
    rubric = await find_rubric(session, name, version)
    if rubric is None:
        which = f"{name} v{version}" if version is not None else name
        raise permanent(
            f"rubric {which!r} is not in the catalog; load it (python -m devtools.load_catalog loads "
            "devtools/rubrics/*.json) or launch with another --rubric",
            RUBRIC_NOT_FOUND,
        )
    return rubric


class JudgeActivities:
    def __init__(self, sessions: async_sessionmaker, storage: Storage) -> None:
        self._sessions = sessions
        self._storage = storage

    @activity.defn(name="prepare_judging")
    @classify_data_errors
    async def prepare_judging(self, request: PrepareJudgingInput) -> PreparedJudging:
        async with self._sessions() as session:
            rubric = await rubric_or_refusal(session, request.rubric_name, request.rubric_version)
            row = await session.execute(
                select(Conversation.id, Conversation.final_storage_path).where(
                    Conversation.conversation_id == request.conversation_id
                )
            )
            found = row.one_or_none()
            if found is None:
                raise permanent(
                    f"conversation {request.conversation_id} is not in the database: nothing to judge",
                    CONVERSATION_NOT_FOUND,
                )
            recorded = await session.scalar(
                select(ConversationVerdict).where(
                    ConversationVerdict.conversation_pk == found.id,
                    ConversationVerdict.rubric_name == rubric.name,
                    ConversationVerdict.rubric_version == rubric.version,
                )
            )
        if recorded is not None:
            return PreparedJudging(recorded=_verdict_of(request.conversation_id, recorded))
        document = json.loads(
            await self._storage.get_bytes(self._storage.conversation_bucket, found.final_storage_path)
        )
        key = judge_request_key(request.user_id, request.conversation_id, rubric.name, rubric.version)
        digest = await self._storage.put_json(
            self._storage.conversation_bucket,
            key,
            {
                "system": rubric.system_text(),
                "user": f"Judge this conversation.\n\n{transcript(document)}",
                "tools": [rubric.verdict_tool()],
                "tool_choice": {"type": "tool", "name": VERDICT_TOOL},
            },
            read_back_soon=True,
        )
        return PreparedJudging(
            request=JudgeInput(
                job_id=request.job_id,
                item_id=request.item_id,
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                rubric_name=rubric.name,
                rubric_version=rubric.version,
                text_key=key,
                text_digest=digest,
            )
        )

    @activity.defn(name="record_verdict")
    @classify_data_errors
    async def record_verdict(self, request: RecordVerdictInput) -> JudgeVerdict:
        """Validate the last reply as a verdict (INVALID_VERDICT, with the problem as its detail,
        asks the workflow for the repair) and record it: the verdict's row, the conversation's
        latest verdict and the job's counters in one transaction, once (a retried step finds the
        row and counts nothing again)."""
        call = request.request
        last = request.judgings[-1]
        reply = json.loads(
            await self._storage.get_bytes(self._storage.conversation_bucket, last.raw_key, last.raw_digest)
        )
        async with self._sessions.begin() as session:
            rubric = await rubric_or_refusal(session, call.rubric_name, call.rubric_version)
            try:
                verdict = parse_verdict(rubric, verdict_tool_input(reply["message"]))
            except VerdictProblem as problem:
                raise permanent(
                    f"the judge's reply is no valid verdict: {problem}; raw reply kept at {last.raw_key}",
                    INVALID_VERDICT,
                    str(problem),
                ) from None
            usage = sum((j.usage for j in request.judgings), TokenUsage())
            conversation_pk = await session.scalar(
                select(Conversation.id).where(Conversation.conversation_id == call.conversation_id)
            )
            if conversation_pk is None:
                raise permanent(f"conversation {call.conversation_id} is gone: its verdict is not recorded", CONVERSATION_NOT_FOUND)
            criteria = {key: c.model_dump() for key, c in verdict.criteria.items()}
            judged_at = datetime.now(UTC)
            inserted = await session.scalar(
                insert(ConversationVerdict)
                .values(
                    conversation_pk=conversation_pk,
                    batch_job_id=request.job_id,
                    rubric_name=rubric.name,
                    rubric_version=rubric.version,
                    judge_model=last.model,
                    overall=verdict.overall,
                    criteria=criteria,
                    usage=usage.model_dump(),
                    cost_usd=usage.cost_usd,
                    raw_key=last.raw_key,
                    judged_at=judged_at,
                )
                .on_conflict_do_nothing(constraint="uq_conversation_verdicts_conversation_pk")
                .returning(ConversationVerdict.id)
            )
            if inserted is None:  # an earlier try of this step recorded it
                recorded = await session.scalars(
                    select(ConversationVerdict).where(
                        ConversationVerdict.conversation_pk == conversation_pk,
                        ConversationVerdict.rubric_name == rubric.name,
                        ConversationVerdict.rubric_version == rubric.version,
                    )
                )
                return _verdict_of(call.conversation_id, recorded.one())
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_pk)
                .values(
                    judge_score=verdict.overall,
                    judge_scores=criteria,
                    judge_rubric=rubric.name,
                    judge_rubric_version=rubric.version,
                    judge_model=last.model,
                    judge_usage=usage.model_dump(),
                    judge_cost_usd=usage.cost_usd,
                    judged_at=judged_at,
                )
            )
            # Counted once per conversation however often it is judged again (a rerun counts
            # its cost, not a second conversation judged).
            first_verdict = await session.scalar(
                select(func.count()).select_from(ConversationVerdict).where(ConversationVerdict.conversation_pk == conversation_pk)
            ) == 1
            await session.execute(
                update(BatchJob)
                .where(BatchJob.id == request.job_id)
                .values(judged_items=BatchJob.judged_items + int(first_verdict), **_judging_paid(usage))
            )
        log.info(
            "conversation judged",
            job_id=str(request.job_id),
            item_id=str(call.item_id),
            rubric=rubric.label,
            overall=verdict.overall,
            cost_usd=round(usage.cost_usd, 6),
        )
        return JudgeVerdict(
            conversation_id=call.conversation_id,
            rubric_name=rubric.name,
            rubric_version=rubric.version,
            overall=verdict.overall,
            usage=usage,
        )


    @activity.defn(name="list_conversations_to_judge")
    @classify_data_errors
    async def list_conversations_to_judge(self, request: ConversationsToJudgeRequest) -> ConversationsToJudge:
        """A page of a job's conversations, by business key after `after` (a rerun's cursor)."""
        query = (
            select(Conversation.conversation_id, BatchItem.id, Conversation.created_by)
            .join(BatchItem, BatchItem.conversation_id == Conversation.id)
            .where(Conversation.batch_job_id == request.job_id)
            .order_by(Conversation.conversation_id)
            .limit(request.limit)
        )
        if request.after is not None:
            query = query.where(Conversation.conversation_id > request.after)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return ConversationsToJudge(
            conversations=[ConversationToJudge(conversation_id=c, item_id=i, user_id=u) for c, i, u in rows]
        )

    @activity.defn(name="record_judge_failure")
    @classify_data_errors
    async def record_judge_failure(self, request: JudgeFailure) -> None:
        """A judging that gave no verdict (its calls failed for good, or its repair was no
        verdict either): the conversation keeps no score, and what the calls cost is counted on
        it and in the job, once (a retried step finds the conversation's usage recorded)."""
        async with self._sessions.begin() as session:
            recorded = await session.scalar(
                update(Conversation)
                .where(
                    Conversation.conversation_id == request.conversation_id,
                    Conversation.judged_at.is_(None),
                    Conversation.judge_usage.is_(None),
                )
                .values(judge_usage=request.usage.model_dump(), judge_cost_usd=request.usage.cost_usd)
                .returning(Conversation.id)
            )
            if recorded is not None:
                usage = request.usage
                await session.execute(
                    update(BatchJob)
                    .where(BatchJob.id == request.job_id)
                    .values(**_judging_paid(usage))
                )
        log.warning(
            "conversation not judged",
            job_id=str(request.job_id),
            item_id=str(request.item_id),
            error=request.error_message,
            cost_usd=round(request.usage.cost_usd, 6),
        )


def _verdict_of(conversation_id: object, row: ConversationVerdict) -> JudgeVerdict:
    return JudgeVerdict(
        conversation_id=conversation_id,
        rubric_name=row.rubric_name,
        rubric_version=row.rubric_version,
        overall=row.overall,
        usage=TokenUsage.model_validate(row.usage),
    )


def _judging_paid(usage: TokenUsage) -> dict[str, Any]:
    """A job's counters after paying for judge calls: its judge cost apart, and in its totals."""
    return {
        "judge_cost_usd": BatchJob.judge_cost_usd + usage.cost_usd,
        "input_tokens": BatchJob.input_tokens + usage.input_tokens,
        "output_tokens": BatchJob.output_tokens + usage.output_tokens,
        "cache_write_tokens": BatchJob.cache_write_tokens + usage.cache_creation_input_tokens,
        "cache_read_tokens": BatchJob.cache_read_tokens + usage.cache_read_input_tokens,
        "cost_usd": BatchJob.cost_usd + usage.cost_usd,
    }
