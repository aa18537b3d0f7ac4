"""Judge a job's conversations again with another rubric version, durably and without
regenerating anything: a page of conversations at a time, a few judgings at once, each the
item's judging steps (workflows/judging.py). A conversation already judged under this version
is not paid for again, so a rerun that is started twice, reset or retried judges each once.
Pausing holds new judgings (those in flight finish); cancelling the workflow cancels them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.judge import JudgeActivities
    from models.messages import (
        ConversationsToJudge,
        ConversationsToJudgeRequest,
        ConversationToJudge,
        JudgeRerunInput,
        JudgeRerunProgress,
        JudgeRerunState,
        PrepareJudgingInput,
    )
    from workflows.config import DATA_STEP, history_is_long
    from workflows.judging import judge


def judge_rerun_workflow_id(job_id: object, rubric_name: str, rubric_version: int) -> str:
    return f"judge-rerun-{job_id}-{rubric_name}-v{rubric_version}"


@workflow.defn(name="JudgeRerunWorkflow")
class JudgeRerunWorkflow:
    def __init__(self) -> None:
        self._paused = False
        self._done = False
        self._state = JudgeRerunState()
        self._request: JudgeRerunInput | None = None

    @workflow.run
    async def run(self, request: JudgeRerunInput) -> JudgeRerunProgress:
        self._request = request
        self._state = request.state or JudgeRerunState()
        while True:
            page: ConversationsToJudge = await workflow.execute_activity_method(
                JudgeActivities.list_conversations_to_judge,
                ConversationsToJudgeRequest(job_id=request.job_id, after=self._state.after, limit=request.page_size),
                **DATA_STEP,
            )
            if not page.conversations:
                break
            limit = asyncio.Semaphore(request.concurrency)
            await asyncio.gather(*(self._judge(request, conversation, limit) for conversation in page.conversations))
            self._state.after = page.conversations[-1].conversation_id
            if history_is_long(request.history_event_limit):
                workflow.continue_as_new(
                    request.model_copy(update={"state": self._state.model_copy(update={"runs": self._state.runs + 1})})
                )
        self._done = True
        return self.progress()

    async def _judge(self, request: JudgeRerunInput, conversation: ConversationToJudge, limit: asyncio.Semaphore) -> None:
        async with limit:
            await workflow.wait_condition(lambda: not self._paused)
            judged = await judge(
                self._data_step,
                request.claude,
                PrepareJudgingInput(
                    job_id=request.job_id,
                    item_id=conversation.item_id,
                    conversation_id=conversation.conversation_id,
                    user_id=conversation.user_id,
                    rubric_name=request.plan.rubric_name,
                    rubric_version=request.plan.rubric_version,
                ),
            )
        self._state.usage += judged.usage
        if judged.verdict is not None:
            self._state.judged += 1
        else:
            self._state.failed += 1
            workflow.logger.warning("conversation %s: %s", conversation.conversation_id, judged.error_message)

    @staticmethod
    async def _data_step(step: Callable[..., Awaitable[Any]], arg: Any) -> Any:
        return await workflow.execute_activity_method(step, arg, **DATA_STEP)

    @workflow.signal
    def pause(self) -> None:
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.query
    def progress(self) -> JudgeRerunProgress:
        request = self._request
        if request is None:
            raise RuntimeError("the rerun's progress is asked before it started")
        return JudgeRerunProgress(
            job_id=request.job_id,
            rubric_name=request.plan.rubric_name,
            rubric_version=request.plan.rubric_version,
            judged=self._state.judged,
            failed=self._state.failed,
            usage=self._state.usage,
            paused=self._paused,
            done=self._done,
        )
