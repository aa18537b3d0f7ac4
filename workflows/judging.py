"""Judging a stored conversation, as steps of a workflow (an item's, after its conversation is
stored; a rerun's, for a job's conversations): prepare the request, the judge's Claude call,
then validate and record the verdict, with one repair when the reply is no valid verdict. A
judging that fails (its call failed for good, or the repair was no verdict either) leaves the
conversation unjudged and says why; its cost is recorded all the same. A cancellation goes
through: pausing holds and cancelling cancels judge calls as it does generation calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.claude import ClaudeActivities
    from activities.errors import INVALID_VERDICT
    from activities.judge import JudgeActivities
    from models.messages import (
        ClaudeCallPlan,
        GeneratedRaw,
        JudgeFailure,
        JudgeInput,
        JudgeVerdict,
        PreparedJudging,
        PrepareJudgingInput,
        RecordVerdictInput,
        RepairRequest,
        TokenUsage,
    )
    from workflows.config import judge_step
    from workflows.step_failures import failure_message, repair_problem, spent_on_failed_call

# A data step of the calling workflow (local first, then as an activity: BatchItemWorkflow._data_step).
DataStep = Callable[[Callable[..., Awaitable[Any]], Any], Awaitable[Any]]
# How the judge's call goes: online by default; an item of a batch-mode job stages it for the
# job's Message Batches (BatchItemWorkflow._judge_in_batch) at half the price.
JudgeCall = Callable[[JudgeInput], Awaitable[GeneratedRaw]]


class JudgeCallFailed(Exception):
    """A judge call that failed for good outside an activity (a Message Batch request that no
    later batch can fix); the message says why."""


@dataclass
class Judged:
    verdict: JudgeVerdict | None
    usage: TokenUsage  # of this judging's calls (none for a verdict recorded before)
    error_message: str | None = None


async def judge(
    data_step: DataStep, plan: ClaudeCallPlan, prepare: PrepareJudgingInput, call: JudgeCall | None = None
) -> Judged:
    prepared: PreparedJudging = await data_step(JudgeActivities.prepare_judging, prepare)
    if prepared.request is None:  # judged before under this rubric version: nothing is paid again
        return Judged(verdict=prepared.recorded, usage=TokenUsage())
    request = prepared.request.model_copy(update={"max_attempts": plan.max_attempts})
    judgings: list[GeneratedRaw] = []
    call = call or (lambda judge_input: _call(plan, judge_input))

    async def record() -> JudgeVerdict:
        return await data_step(
            JudgeActivities.record_verdict, RecordVerdictInput(job_id=prepare.job_id, request=request, judgings=judgings)
        )

    try:
        judgings.append(await call(request))
        try:
            verdict = await record()
        except ActivityError as error:
            if not (isinstance(error.cause, ApplicationError) and error.cause.type == INVALID_VERDICT):
                raise
            # One repair: the rejected verdict is answered with what was wrong; a second fails.
            repair = RepairRequest(rejected_raw_key=judgings[0].raw_key, problem=repair_problem(error.cause))
            judgings.append(await call(request.model_copy(update={"repair": repair})))
            verdict = await record()
        return Judged(verdict=verdict, usage=sum((j.usage for j in judgings), TokenUsage()))
    except (ActivityError, JudgeCallFailed) as error:
        if isinstance(error, ActivityError) and isinstance(error.cause, CancelledError):
            raise
        if isinstance(error, ActivityError):
            usage = sum((j.usage for j in judgings), spent_on_failed_call(error))
            message = f"judging failed: {failure_message(error)}"
        else:
            usage, message = sum((j.usage for j in judgings), TokenUsage()), f"judging failed: {error}"
        await data_step(
            JudgeActivities.record_judge_failure,
            JudgeFailure(
                job_id=prepare.job_id,
                item_id=prepare.item_id,
                conversation_id=prepare.conversation_id,
                usage=usage,
                error_message=message,
            ),
        )
        return Judged(verdict=None, usage=usage, error_message=message)


async def _call(plan: ClaudeCallPlan, request: JudgeInput) -> GeneratedRaw:
    return await workflow.execute_activity_method(
        ClaudeActivities.judge_conversation, request, **judge_step(plan, workflow.info().priority)
    )
