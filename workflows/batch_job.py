"""One batch job: runs its items with bounded concurrency, owns the job's state machine
(queued -> processing <-> paused -> completed | failed | cancelled), and continues as new long
before Temporal's history limits, so a batch of any size fits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.enrichment import EnrichmentActivities
    from activities.jobs import JobActivities
    from models import search_attributes
    from models.workflow_ids import item_workflow_id, job_workflow_id, message_batches_workflow_id
    from models.enums import DeliveryMode, ErrorPolicy, ItemStatus, JobStatus
    from models.messages import (
        BatchItemInput,
        BatchJobInput,
        BatchProgressState,
        EnrichPageInput,
        FinishItemInput,
        ItemFinished,
        ItemPageRequest,
        ItemRef,
        JobPlan,
        JobProgress,
        JobStatusChange,
        MessageBatchesInput,
        MessageBatchesState,
    )
    from workflows.batch_item import BatchItemWorkflow, failure_message
    from workflows.message_batches import MessageBatchesWorkflow
    from workflows.config import DATA_STEP, ITEM_CANCEL_GRACE, ITEM_FINISHED_SIGNAL


@workflow.defn(name="BatchJobWorkflow")
class BatchJobWorkflow:
    @workflow.init
    def __init__(self, request: BatchJobInput) -> None:
        # A continued run's state must be in place before anything else: the first activation
        # delivers signals (item reports, pause, cancel) before `run` starts.
        self._job_id = request.job_id
        self._state = request.state or BatchProgressState()
        self._status = JobStatus.QUEUED
        if request.state:
            self._status = JobStatus.PAUSED if request.state.paused else JobStatus.PROCESSING
        self._plan: JobPlan | None = None
        self._message_batch_plan = request.message_batches
        self._percent_reported = -1
        self._lock = asyncio.Lock()

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: BatchJobInput) -> JobProgress:
        try:
            self._plan = await workflow.execute_activity_method(JobActivities.start_job, request.job_id, **DATA_STEP)
        except ActivityError as error:
            return await self._cannot_run(failure_message(error))
        if not request.state:  # a new run starts from the row (a retry keeps its counters)
            self._state.total_items = self._plan.total_items
            self._state.counters = self._plan.counters
            self._state.usage = self._plan.usage
            self._state.started_at = self._plan.started_at
        self._show_status(JobStatus.PAUSED if self._state.paused else JobStatus.PROCESSING)
        if self._plan.mode == DeliveryMode.BATCH:
            await self._start_message_batches(request)
        try:
            await self._run_items(request)
        except asyncio.CancelledError:
            # A cancellation from the web UI or the client API ends the job like the cancel signal.
            self._state.cancel_requested = True
            await self._finish()
            raise
        return await self._finish()

    async def _run_items(self, request: BatchJobInput) -> None:
        pending: list[ItemRef] = []
        exhausted = False
        while not self._halting:
            if not pending and not exhausted:
                pending, exhausted = await self._next_page(request)
            if not pending:
                break
            await workflow.wait_condition(
                lambda: self._halting or self._can_start_items or self._history_is_long(request)
            )
            if self._halting:
                break
            if self._can_start_items:
                # Fill every free slot at once: the starts go out in one workflow task, not one by one.
                starting, pending = pending[: self._free_slots], pending[self._free_slots :]
                await asyncio.gather(*(self._start_item(request, item) for item in starting))
            if self._history_is_long(request):
                # Also while paused: reports of in-flight items keep adding events.
                # The in-flight items report to this workflow id, which the next run keeps.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    request.model_copy(update={"state": self._state.model_copy(update={"runs": self._state.runs + 1})})
                )
        await workflow.wait_condition(lambda: self._halting or not self._state.in_flight)

    async def _finish(self) -> JobProgress:
        if self._halting:
            await self._halt()
        await self._tell_message_batches(MessageBatchesWorkflow.close)
        await self._enrich()
        status, reason = self._final_status()
        async with self._lock:  # after any pause or resume still being recorded
            await self._change_status(status, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()

    async def _halt(self) -> None:
        """Cancel or stop: nothing new starts, in-flight items are cancelled, unstarted ones marked."""
        await self._tell_message_batches(MessageBatchesWorkflow.cancel)
        await asyncio.gather(*(self._cancel_item(item_id) for item_id in self._state.in_flight))
        never_started = await workflow.execute_activity_method(JobActivities.cancel_queued_items, self._job_id, **DATA_STEP)
        self._state.counters.cancelled += never_started  # read after the await: reports arrive meanwhile
        try:
            await workflow.wait_condition(lambda: not self._state.in_flight, timeout=ITEM_CANCEL_GRACE)
        except asyncio.TimeoutError:
            # An item that cannot report (its worker is gone) is recorded as cancelled here.
            for item_id in list(self._state.in_flight):
                recorded = await workflow.execute_activity_method(
                    JobActivities.finish_item,
                    FinishItemInput(
                        job_id=self._job_id,
                        finished_at=workflow.now(),
                        outcome=ItemFinished(item_id=item_id, status=ItemStatus.CANCELLED),
                    ),
                    **DATA_STEP,
                )
                self.item_finished(ItemFinished(item_id=item_id, status=recorded))

    async def _enrich(self) -> None:
        """Enrich what succeeded, a page per activity (the history grows by one step per page),
        before the job may be final. Pages already done by an earlier run or attempt are skipped."""
        enriched, more = 0, True
        while more:
            page = await workflow.execute_activity_method(
                EnrichmentActivities.enrich_conversations, EnrichPageInput(job_id=self._job_id), **DATA_STEP
            )
            enriched, more = enriched + page.enriched, page.more
            workflow.set_current_details(f"enriched {enriched} conversations")

    async def _cannot_run(self, reason: str) -> JobProgress:
        self._state.counters.cancelled = await workflow.execute_activity_method(
            JobActivities.cancel_queued_items, self._job_id, **DATA_STEP
        )
        await self._change_status(JobStatus.FAILED, reason)
        return self.progress()

    # --- signals and queries ------------------------------------------------------------

    @workflow.signal(name=ITEM_FINISHED_SIGNAL)
    def item_finished(self, outcome: ItemFinished) -> None:
        # Items report at least once; only the first report of an in-flight item counts.
        if outcome.item_id not in self._state.in_flight:
            return
        self._state.in_flight.remove(outcome.item_id)
        self._state.usage += outcome.usage
        counters = self._state.counters
        if outcome.status == ItemStatus.CANCELLED:
            counters.cancelled += 1
        else:
            counters.completed += 1
            self._state.item_seconds += outcome.duration_s
            self._state.items_timed += 1
        if outcome.status == ItemStatus.COMPLETED:
            counters.successful += 1
        elif outcome.status == ItemStatus.FAILED:
            counters.failed += 1
            self._state.first_failure = self._state.first_failure or f"item {outcome.item_id}: {outcome.error_message}"
        self._report_percent()

    @workflow.signal
    async def pause(self) -> None:
        """Start nothing new; items in flight finish."""
        async with self._lock:
            if self._status != JobStatus.PROCESSING or self._halting:
                workflow.logger.warning("pause ignored: the job is %s", self._status.value)
                return
            self._state.paused = True
            await self._change_status(JobStatus.PAUSED)
            await self._tell_message_batches(MessageBatchesWorkflow.pause)

    @workflow.signal
    async def resume(self) -> None:
        async with self._lock:
            if self._status != JobStatus.PAUSED or self._halting:
                workflow.logger.warning("resume ignored: the job is %s", self._status.value)
                return
            self._state.paused = False
            await self._change_status(JobStatus.PROCESSING)
            await self._tell_message_batches(MessageBatchesWorkflow.resume)

    @workflow.signal
    def cancel(self) -> None:
        """End the job `cancelled`: in-flight items are cancelled, unstarted ones marked."""
        if self._status.is_final:
            workflow.logger.warning("cancel ignored: the job is %s", self._status.value)
            return
        self._state.cancel_requested = True

    @workflow.query
    def progress(self) -> JobProgress:
        counters = self._state.counters
        total = self._state.total_items
        remaining = total - counters.completed - counters.cancelled
        started = self._state.started_at
        elapsed = (workflow.now() - started).total_seconds() if started else 0.0
        return JobProgress(
            job_id=self._job_id,
            status=self._status,
            total=total,
            completed=counters.completed,
            successful=counters.successful,
            failed=counters.failed,
            cancelled=counters.cancelled,
            in_flight=len(self._state.in_flight),
            remaining=remaining,
            started_at=started,
            elapsed_s=round(elapsed, 1),
            eta_seconds=self._eta_seconds(remaining),
            usage=self._state.usage,
            stop_reason=self._stop_reason,
            runs=self._state.runs,
        )

    # --- decisions ----------------------------------------------------------------------

    @property
    def _stop_reason(self) -> str | None:
        if self._plan and self._plan.error_policy == ErrorPolicy.STOP and self._state.first_failure:
            return f"stopped at the first failed item ({self._state.first_failure})"
        return None

    @property
    def _halting(self) -> bool:
        return self._state.cancel_requested or self._stop_reason is not None

    @property
    def _can_start_items(self) -> bool:
        return not self._state.paused and self._free_slots > 0

    @property
    def _free_slots(self) -> int:
        # In batch mode an item in flight waits in a Message Batch and holds no worker slot.
        if self._plan.mode == DeliveryMode.BATCH:
            return self._message_batch_plan.in_flight_items - len(self._state.in_flight)
        return self._plan.concurrency - len(self._state.in_flight)

    def _final_status(self) -> tuple[JobStatus, str | None]:
        counters = self._state.counters
        if self._state.cancel_requested:
            return JobStatus.CANCELLED, "cancelled by request"
        if self._stop_reason:
            return JobStatus.FAILED, self._stop_reason
        if counters.failed and not counters.successful:
            return JobStatus.FAILED, f"all {counters.failed} items failed; see batch_items.error_message"
        return JobStatus.COMPLETED, None

    def _eta_seconds(self, remaining: int) -> float | None:
        """Remaining items x the measured mean item time, spread over the concurrency."""
        if self._status.is_final:
            return 0.0
        if self._state.paused or not self._state.items_timed or not self._plan:
            return None
        mean_item_s = self._state.item_seconds / self._state.items_timed
        return round(remaining * mean_item_s / self._plan.concurrency, 1)

    def _history_is_long(self, request: BatchJobInput) -> bool:
        info = workflow.info()
        return info.get_current_history_length() >= request.history_event_limit or info.is_continue_as_new_suggested()

    # --- effects ------------------------------------------------------------------------

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
        self._state.next_position = max(self._state.next_position, item.position + 1)
        await workflow.start_child_workflow(
            BatchItemWorkflow.run,
            BatchItemInput(
                job_id=request.job_id,
                item_id=item.item_id,
                user_id=self._plan.user_id,
                parent_workflow_id=workflow.info().workflow_id,
                claude=request.claude,
                mode=self._plan.mode,
            ),
            id=item_workflow_id(item.item_id),
            # Items outlive each run of this workflow: continue-as-new must not end them.
            parent_close_policy=ParentClosePolicy.ABANDON,
            # An item that ended well is never started again; a failed one can be retried.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )

    async def _start_message_batches(self, request: BatchJobInput) -> None:
        """The job's Message Batches workflow, unless it runs already (a continued run, say)."""
        try:
            await workflow.start_child_workflow(
                MessageBatchesWorkflow.run,
                MessageBatchesInput(
                    job_id=self._job_id,
                    plan=request.message_batches,
                    history_event_limit=request.history_event_limit,
                    state=MessageBatchesState(paused=self._state.paused),
                ),
                id=message_batches_workflow_id(self._job_id),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            pass

    async def _tell_message_batches(self, signal: Callable[[MessageBatchesWorkflow], None]) -> None:
        if not self._plan or self._plan.mode != DeliveryMode.BATCH:
            return
        try:
            await workflow.get_external_workflow_handle(message_batches_workflow_id(self._job_id)).signal(signal)
        except ApplicationError as error:
            workflow.logger.info("the Message Batches workflow did not take the signal: %s", error)

    async def _cancel_item(self, item_id: uuid.UUID) -> None:
        try:
            await workflow.get_external_workflow_handle(item_workflow_id(item_id)).cancel()
        except ApplicationError as error:
            # It ended on its own meanwhile; its report arrives (or arrived) as usual.
            workflow.logger.info("item %s could not be cancelled: %s", item_id, error)

    async def _change_status(self, status: JobStatus, reason: str | None = None) -> None:
        """Make a transition visible: search attributes at once, then the row and the log file."""
        self._show_status(status)
        await workflow.execute_activity_method(
            JobActivities.set_job_status,
            JobStatusChange(job_id=self._job_id, status=status, error_message=reason),
            **DATA_STEP,
        )
        if status == JobStatus.PAUSED or status.is_final:
            await workflow.execute_activity_method(JobActivities.write_job_log, self._job_id, **DATA_STEP)

    def _show_status(self, status: JobStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([search_attributes.BATCH_STATUS.value_set(status.value)])
        self._report_percent()

    def _report_percent(self) -> None:
        counters = self._state.counters
        total = self._state.total_items
        percent = 100 if total == 0 else (counters.completed + counters.cancelled) * 100 // total
        if percent != self._percent_reported:
            self._percent_reported = percent
            workflow.upsert_search_attributes([search_attributes.BATCH_PERCENT_DONE.value_set(percent)])
