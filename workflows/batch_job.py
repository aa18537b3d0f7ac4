"""One batch job: runs its items with bounded concurrency, owns the job's state, and continues
as new long before Temporal's history limits, so a batch of any size fits."""

from __future__ import annotations

import asyncio
import uuid

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.jobs import JobActivities
    from models import search_attributes
    from models.enums import ItemStatus, JobStatus
    from models.messages import (
        BatchItemInput,
        BatchJobInput,
        BatchProgressState,
        FinishJobInput,
        ItemFinished,
        ItemPageRequest,
        ItemRef,
        JobPlan,
        JobProgress,
    )
    from workflows.batch_item import BatchItemWorkflow
    from workflows.config import DATA_STEP, ITEM_FINISHED_SIGNAL


def job_workflow_id(job_id: object) -> str:
    return f"batch-job-{job_id}"


def item_workflow_id(item_id: object) -> str:
    return f"batch-item-{item_id}"


@workflow.defn(name="BatchJobWorkflow")
class BatchJobWorkflow:
    def __init__(self) -> None:
        self._job_id: uuid.UUID | None = None
        self._state = BatchProgressState()
        self._plan: JobPlan | None = None
        self._status = JobStatus.QUEUED
        self._percent_reported = -1

    @workflow.run
    async def run(self, request: BatchJobInput) -> JobProgress:
        self._job_id = request.job_id
        self._state = request.state or BatchProgressState()
        self._plan = await workflow.execute_activity_method(JobActivities.start_job, request.job_id, **DATA_STEP)
        self._set_status(JobStatus.PROCESSING)

        pending: list[ItemRef] = []
        exhausted = False
        while True:
            if not pending and not exhausted:
                pending, exhausted = await self._next_page(request)
            if not pending:
                break
            await workflow.wait_condition(lambda: len(self._state.in_flight) < self._plan.concurrency)
            # Fill every free slot at once: the starts go out in one workflow task, not one by one.
            free_slots = self._plan.concurrency - len(self._state.in_flight)
            starting, pending = pending[:free_slots], pending[free_slots:]
            await asyncio.gather(*(self._start_item(request, item) for item in starting))
            if self._history_is_long(request):
                # The in-flight items report to this workflow id, which the next run keeps.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    BatchJobInput(
                        job_id=request.job_id,
                        page_size=request.page_size,
                        history_event_limit=request.history_event_limit,
                        state=self._state.model_copy(update={"runs": self._state.runs + 1}),
                    )
                )

        await workflow.wait_condition(lambda: not self._state.in_flight)
        final_status, reason = self._final_status()
        await workflow.execute_activity_method(
            JobActivities.finish_job,
            FinishJobInput(job_id=request.job_id, status=final_status, error_message=reason),
            **DATA_STEP,
        )
        self._set_status(final_status)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()

    @workflow.signal(name=ITEM_FINISHED_SIGNAL)
    def item_finished(self, outcome: ItemFinished) -> None:
        # Items report at least once; only the first report of an in-flight item counts.
        if outcome.item_id not in self._state.in_flight:
            return
        self._state.in_flight.remove(outcome.item_id)
        self._state.usage += outcome.usage
        if outcome.status == ItemStatus.COMPLETED:
            self._state.completed += 1
            self._state.successful += 1
        elif outcome.status == ItemStatus.FAILED:
            self._state.completed += 1
            self._state.failed += 1
        self._report_percent()

    @workflow.query
    def progress(self) -> JobProgress:
        total = self._plan.total_items if self._plan else 0
        return JobProgress(
            job_id=self._job_id,
            status=self._status,
            total=total,
            completed=self._state.completed,
            successful=self._state.successful,
            failed=self._state.failed,
            in_flight=len(self._state.in_flight),
            remaining=total - self._state.completed,
            usage=self._state.usage,
            runs=self._state.runs,
        )

    async def _next_page(self, request: BatchJobInput) -> tuple[list[ItemRef], bool]:
        page = await workflow.execute_activity_method(
            JobActivities.list_queued_items,
            ItemPageRequest(job_id=request.job_id, from_position=self._state.next_position, limit=request.page_size),
            **DATA_STEP,
        )
        return page.items, len(page.items) < request.page_size

    async def _start_item(self, request: BatchJobInput, item: ItemRef) -> None:
        # Counted as in flight before the start is confirmed: a fast item may report before that.
        self._state.in_flight.append(item.item_id)
        self._state.next_position = item.position + 1
        await workflow.start_child_workflow(
            BatchItemWorkflow.run,
            BatchItemInput(
                job_id=request.job_id,
                item_id=item.item_id,
                user_id=self._plan.user_id,
                parent_workflow_id=workflow.info().workflow_id,
            ),
            id=item_workflow_id(item.item_id),
            # Items outlive each run of this workflow: continue-as-new must not end them.
            parent_close_policy=ParentClosePolicy.ABANDON,
        )

    def _history_is_long(self, request: BatchJobInput) -> bool:
        info = workflow.info()
        return info.get_current_history_length() >= request.history_event_limit or info.is_continue_as_new_suggested()

    def _final_status(self) -> tuple[JobStatus, str | None]:
        if self._state.completed > 0 and self._state.successful == 0:
            return JobStatus.FAILED, f"all {self._state.failed} items failed; see batch_items.error_message"
        return JobStatus.COMPLETED, None

    def _set_status(self, status: JobStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([search_attributes.BATCH_STATUS.value_set(status.value)])
        self._report_percent()

    def _report_percent(self) -> None:
        total = self._plan.total_items if self._plan else 0
        percent = 100 if total == 0 else self._state.completed * 100 // total
        if percent != self._percent_reported:
            self._percent_reported = percent
            workflow.upsert_search_attributes([search_attributes.BATCH_PERCENT_DONE.value_set(percent)])
