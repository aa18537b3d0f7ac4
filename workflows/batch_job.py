"""One batch job: runs its items with bounded concurrency, owns the job's state machine
(queued -> processing <-> paused -> completed | failed | cancelled), and continues as new long
before Temporal's history limits, so a batch of any size fits.

Every item is accounted exactly once: by its own report (a signal), or, when its workflow ended
without one (terminated, failed before reporting), from its row. The job's own steps never fail
this workflow: a step that cannot succeed is logged, and the job ends with a reason instead.
The execution ends in the job's state, so the web UI shows it (JOB_ENDS_IN_ITS_STATE): Completed
with the JobProgress as its result, Failed with an ApplicationError of type JOB_FAILED (the
reason as its message, the JobProgress as its details), Canceled for a cancelled job, by the
cancel signal or a cancellation request (service/job_outcome.py reads all three)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.enrichment import EnrichmentActivities
    from activities.item_workflows import WorkflowActivities
    from activities.jobs import JobActivities
    from models import search_attributes
    from models.enums import DeliveryMode, ErrorPolicy, ItemStatus, JobStatus
    from models.messages import (
        ITEM_FINISHED_SIGNAL,
        BatchItemInput,
        BatchJobInput,
        BatchProgressState,
        CancelQueuedItems,
        EnrichPageInput,
        ItemFinished,
        ItemPageRequest,
        ItemRef,
        ItemWorkflowStarts,
        JobBudget,
        JobPlan,
        JobProgress,
        JobStatusChange,
        MessageBatchesInput,
        MessageBatchesState,
        UnreportedItems,
        WorkflowIds,
    )
    from models.workflow_ids import item_workflow_id, message_batches_workflow_id
    from workflows.batch_item import ITEM_STEPS_VERSION, BatchItemWorkflow, failure_message
    from workflows.budget import budget_reached_reason, items_within_budget, projected_item_cost
    from workflows.config import (
        CONTINUE_DURING_FINAL_ENRICHMENT,
        CONTINUE_WITHOUT_WAITING_FOR_ENRICHMENT,
        DATA_STEP,
        ITEM_CANCEL_GRACE,
        ITEMS_STARTED_BY_ACTIVITY,
        JOB_ENDS_IN_ITS_STATE,
        JOB_FAILED,
        history_is_long,
        item_priority,
    )
    from workflows.message_batches import MessageBatchesWorkflow


@workflow.defn(name="BatchJobWorkflow")
class BatchJobWorkflow:
    @workflow.init
    def __init__(self, request: BatchJobInput) -> None:
        # A continued run's state must be in place before anything else: the first activation
        # delivers signals (item reports, pause, cancel) before `run` starts.
        self._job_id = request.job_id
        self._summary = request.summary
        self._state = request.state or BatchProgressState()
        # In flight, as an ordered set: reports look items up one by one, and a batch-mode job
        # has all its items in flight (a list made each report O(n), a burst of them O(n^2)).
        # The state's list is written back when the run hands over.
        self._in_flight = dict.fromkeys(self._state.in_flight)
        self._plan = self._state.plan  # None until the job's first run (or a retry's) reads it
        self._message_batch_plan = request.message_batches
        self._status = JobStatus.QUEUED
        if self._plan:
            self._status = JobStatus.PAUSED if self._state.paused else JobStatus.PROCESSING
        self._percent_reported = -1
        self._lock = asyncio.Lock()
        # The ends of the item workflows this run started are awaited; every in-flight item is
        # also checked against Temporal and its row each interval (those carried over from an
        # earlier run, or started elsewhere, have no handle here; a terminated child is not
        # always announced to its parent).
        self._item_watches: set[asyncio.Task] = set()
        self._check_unreported = bool(self._in_flight)  # a continued run checks at once
        # Items whose child start is not confirmed yet: Temporal does not know their workflow, so
        # the check must not take them for ended.
        self._starting: set[uuid.UUID] = set()
        self._ended = False
        self._enrichment_shown = bool(self._state.enriched)  # the details count enriched conversations
        self._enriching = False  # an enrichment page is under way
        self._items_done = False
        self._continuing = False  # this run hands over to the next: no new enrichment page
        self._start_at_least = 1  # free slots worth a round of item starts
        self._enrich_due_at = 0  # successes at which the next enrichment page is due
        self._final_reason: str | None = None  # why the job ended failed or cancelled

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: BatchJobInput) -> JobProgress:
        accounting = asyncio.create_task(self._account_unreported_items(request))
        try:
            await self._run(request)
        except asyncio.CancelledError:
            if workflow.cancellation_reason() is None:
                raise
            # A cancellation from the web UI or the client API ends the job like the cancel signal.
            self._state.cancel_requested = True
        progress = await self._end(request)
        self._ended = True
        await accounting
        if workflow.cancellation_reason() is not None and progress.status == JobStatus.CANCELLED:
            raise asyncio.CancelledError("the job was cancelled")  # the execution ends cancelled too
        if progress.status != JobStatus.COMPLETED and workflow.patched(JOB_ENDS_IN_ITS_STATE):
            await self._end_execution_as(progress)
        return progress

    async def _end_execution_as(self, progress: JobProgress) -> None:
        """The execution ends in the job's state, so the web UI shows it: a failed job fails it
        (the reason as the message, the progress as details), a cancelled one cancels it."""
        if progress.status == JobStatus.FAILED:
            raise ApplicationError(self._final_reason or "the job failed", progress, type=JOB_FAILED, non_retryable=True)
        # Cancelled by the signal (or by a cancellation an earlier run took): the SDK ends an
        # execution Canceled only after a cancellation request, which a workflow cannot send to
        # itself. An activity sends it; the run waits for it and ends on it.
        own_run = f"{workflow.info().workflow_id}/{workflow.info().run_id}"
        try:
            await self._activity(WorkflowActivities.request_cancellation, WorkflowIds(workflow_ids=[own_run]))
            await workflow.wait_condition(lambda: workflow.cancellation_reason() is not None)
        except asyncio.CancelledError:
            pass  # the request has arrived
        except ActivityError as error:
            # Without the request the execution fails with a cancellation failure: still not green.
            workflow.logger.error("job %s: its cancellation could not be requested: %s", self._job_id, failure_message(error))
        raise asyncio.CancelledError("the job was cancelled")

    async def _run(self, request: BatchJobInput) -> None:
        if self._plan is None:
            await self._start(request.job_id)
        else:
            self._show_status(self._status)
        if self._state.finishing:
            return
        if self._plan and self._plan.mode == DeliveryMode.BATCH and not self._halting:
            await self._start_message_batches(request)
        if not self._halting:
            await self._run_items(request)

    async def _start(self, job_id: uuid.UUID) -> None:
        """A fresh run (a new job, or a retry): the plan and counters from the row, once per job."""
        try:
            plan = await self._activity(JobActivities.start_job, job_id)
        except ActivityError as error:
            self._state.job_error = failure_message(error)
            return
        # Items an earlier run left processing report here, or are accounted from their rows.
        self._in_flight.update(dict.fromkeys(plan.unfinished_items))
        self._check_unreported = self._check_unreported or bool(plan.unfinished_items)
        self._plan = self._state.plan = plan.model_copy(update={"unfinished_items": []})
        self._state.total_items = plan.total_items
        self._state.counters = plan.counters
        self._state.usage = plan.usage
        self._state.started_at = plan.started_at
        async with self._lock:
            if self._state.paused:  # a pause sent while the job was queued
                await self._change_status(JobStatus.PAUSED)
            else:
                self._show_status(JobStatus.PROCESSING)

    async def _run_items(self, request: BatchJobInput) -> None:
        # Runs recorded before items were started by an activity replay with child workflows
        # (and enriched only once their items were done).
        by_activity = workflow.patched(ITEMS_STARTED_BY_ACTIVITY)
        enriching = asyncio.create_task(self._enrich_while_items_run(request.enrich_every)) if by_activity else None
        try:
            await self._run_item_pages(request, by_activity)
        finally:
            self._items_done = True
        if enriching:
            await enriching

    async def _run_item_pages(self, request: BatchJobInput, by_activity: bool) -> None:
        pending: list[ItemRef] = []
        exhausted = False
        while not self._halting:
            if not pending and not exhausted:
                pending, exhausted = await self._next_page(request)
            if not pending:
                break
            # Slots are refilled a few at a time, so a start costs the job's history a few events.
            self._start_at_least = min(len(pending), self._refill_at) if by_activity else 1
            await workflow.wait_condition(
                lambda: self._halting or self._can_start or self._budget_reached or self._history_is_long(request)
            )
            if self._halting:
                break
            if self._budget_reached:
                await self._pause_at_budget()
            if self._can_start:
                starting, pending = pending[: self._free_slots], pending[self._free_slots :]
                if by_activity:
                    await self._start_items(request, starting)
                else:
                    await asyncio.gather(*(self._start_item(request, item) for item in starting))
            if self._history_is_long(request):
                # Also while paused: reports of in-flight items keep adding events.
                await self._continue_as_new(request)
        # Every item has started; in batch mode up to all of them are still to report.
        await workflow.wait_condition(
            lambda: self._halting or not self._in_flight or self._history_is_long(request)
        )
        if not self._halting and self._in_flight:
            await self._continue_as_new(request)

    async def _continue_as_new(self, request: BatchJobInput) -> None:
        """The in-flight items report to this workflow id, which the next run keeps."""
        if workflow.patched(CONTINUE_WITHOUT_WAITING_FOR_ENRICHMENT):
            # Reports keep arriving while a run waits, past its margin. An enrichment page under
            # way is not waited for: it enriches its rows all the same (its count in the web UI's
            # line is dropped), and the next run's pages go on.
            self._continuing = True
            await workflow.wait_condition(workflow.all_handlers_finished)
        else:
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._enriching)
        workflow.continue_as_new(
            request.model_copy(
                update={"state": self._state.model_copy(update={"runs": self._state.runs + 1, "in_flight": list(self._in_flight)})}
            )
        )

    async def _end(self, request: BatchJobInput) -> JobProgress:
        """_finish, shielded: a cancellation from the web UI during the halt or the last writes
        makes the job end cancelled, never half-written."""
        finishing = asyncio.create_task(self._finish(request))
        while True:
            try:
                return await asyncio.shield(finishing)
            except asyncio.CancelledError:
                if workflow.cancellation_reason() is None:
                    raise
                self._state.cancel_requested = True

    async def _finish(self, request: BatchJobInput) -> JobProgress:
        """The job's last steps, in order: halt if it must, enrich what succeeded, then the final
        status (the row, its counters recounted from the item rows, and the log)."""
        if not self._state.finishing:
            if self._halting:
                await self._halt()
            await self._tell_message_batches(MessageBatchesWorkflow.close)
            self._state.finishing = True
        await self._enrich(request)
        status, reason = self._final_status()
        self._final_reason = reason
        async with self._lock:  # after any pause or resume still being recorded
            await self._change_status(status, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()

    async def _halt(self) -> None:
        """Cancel or stop: nothing new starts, in-flight items are cancelled, unstarted ones marked."""
        await self._tell_message_batches(MessageBatchesWorkflow.cancel)
        await asyncio.gather(*(self._cancel_item(item_id) for item_id in self._in_flight))
        never_started = await self._job_step(
            JobActivities.cancel_queued_items, CancelQueuedItems(job_id=self._job_id, in_flight=list(self._in_flight))
        )
        self._state.counters.cancelled += never_started or 0
        try:
            await workflow.wait_condition(lambda: not self._in_flight, timeout=ITEM_CANCEL_GRACE)
        except TimeoutError:
            # An item that cannot report (its worker is gone) is recorded as cancelled here.
            reason = f"its workflow did not report within {ITEM_CANCEL_GRACE.total_seconds():.0f} s of the cancel"
            await self._record_unreported(ItemStatus.CANCELLED, dict.fromkeys(self._in_flight, reason))

    async def _enrich(self, request: BatchJobInput) -> None:
        """Enrich what succeeded, a page per activity (the history grows by one step per page),
        before the job may be final. Pages already done by an earlier run or attempt are skipped.
        A page that fails for good ends the enrichment (logged); the job still ends. Pages left
        behind by the items (enrichment slower than the items) may be many: the job continues
        as new between them, and the next run goes on with them."""
        while await self._enrich_page():
            if self._history_is_long(request) and workflow.patched(CONTINUE_DURING_FINAL_ENRICHMENT):
                await self._continue_as_new(request)

    async def _enrich_while_items_run(self, every: int) -> None:
        """A page each `every` new conversations while items still run (their calls wait for
        the rate limit meanwhile), so the job's end enriches only the last few."""
        while True:
            self._enrich_due_at = self._state.counters.successful + every
            await workflow.wait_condition(
                lambda: self._items_done
                or self._continuing
                or self._state.counters.successful >= self._enrich_due_at
            )
            if self._items_done or self._continuing:
                return
            self._enriching = True
            try:
                await self._enrich_page()
            finally:
                self._enriching = False

    async def _enrich_page(self) -> bool:
        """One page; whether the job has more to enrich (a page that fails for good ends it)."""
        page = await self._job_step(EnrichmentActivities.enrich_conversations, EnrichPageInput(job_id=self._job_id))
        if page is None:
            return False
        self._state.enriched += page.enriched
        self._enrichment_shown = True
        self._show_details()
        return page.more

    # --- items that end without a report ------------------------------------------------

    async def _await_item(self, item_id: uuid.UUID, handle: ChildWorkflowHandle) -> None:
        # A failed item fails its workflow after its report; any other end is checked below.
        with contextlib.suppress(ChildWorkflowError):
            await handle
        # An item reports before its workflow ends, so one still in flight ended without a
        # report (terminated, or failed before it), or was reset (a new run of it reports later).
        if item_id in self._in_flight:
            self._check_unreported = True

    async def _account_unreported_items(self, request: BatchJobInput) -> None:
        while True:
            await workflow.wait_condition(lambda: self._ended or self._check_unreported or bool(self._in_flight))
            if not self._check_unreported:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._ended or self._check_unreported, timeout=request.unreported_check_s
                    )
            if self._ended:
                return
            self._check_unreported = False
            in_flight = [item_id for item_id in self._in_flight if item_id not in self._starting]
            if not in_flight:
                continue
            states = await self._job_step(
                WorkflowActivities.ended_workflows, WorkflowIds(workflow_ids=[item_workflow_id(i) for i in in_flight])
            )
            ended = {
                item_id: f"its workflow ended ({states.ended[item_workflow_id(item_id)]}) before it reported an outcome"
                for item_id in in_flight
                if states and item_workflow_id(item_id) in states.ended
            }
            await self._record_unreported(ItemStatus.FAILED, ended)

    async def _record_unreported(self, status: ItemStatus, reasons: dict[uuid.UUID, str]) -> None:
        """Each row keeps its outcome if it has one (its report may still be on the way), else
        gets this one; the job counts what the rows end with, once."""
        if not reasons:
            return
        recorded = await self._job_step(
            JobActivities.record_unreported_items,
            UnreportedItems(job_id=self._job_id, finished_at=workflow.now(), status=status, reasons=reasons),
        )
        for outcome in recorded.items if recorded else []:
            self.item_finished(outcome)

    # --- signals and queries ------------------------------------------------------------

    # The name on the wire, whatever the method is called: running items, saved histories and
    # complete_item send it.
    @workflow.signal(name=ITEM_FINISHED_SIGNAL)
    def item_finished(self, outcome: ItemFinished) -> None:
        # Items report at least once; only the first report of an in-flight item counts.
        if outcome.item_id not in self._in_flight:
            return
        del self._in_flight[outcome.item_id]
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
            counters.judged += int(outcome.judged)
        elif outcome.status == ItemStatus.FAILED:
            counters.failed += 1
            self._state.first_failure = self._state.first_failure or f"item {outcome.item_id}: {outcome.error_message}"
        self._report_percent()
        self._show_details()

    @workflow.signal
    async def pause(self) -> None:
        """Start nothing new; items in flight finish. Sent while the job is queued, it is kept
        and applied when the job starts."""
        async with self._lock:
            if self._halting or self._state.paused or self._status not in (JobStatus.QUEUED, JobStatus.PROCESSING):
                workflow.logger.warning("pause ignored: the job is %s", self._status.value)
                return
            self._state.paused = True
            if self._status == JobStatus.PROCESSING:
                await self._change_status(JobStatus.PAUSED)
            await self._tell_message_batches(MessageBatchesWorkflow.pause)

    @workflow.signal
    async def resume(self) -> None:
        async with self._lock:
            if self._halting or not self._state.paused:
                workflow.logger.warning("resume ignored: the job is %s", self._status.value)
                return
            self._state.paused = False
            if self._status == JobStatus.PAUSED:
                await self._change_status(JobStatus.PROCESSING)
            await self._tell_message_batches(MessageBatchesWorkflow.resume)

    @workflow.signal
    def set_budget(self, budget: JobBudget) -> None:
        """A new budget (`resume --max-cost`), checked before the next item starts. A job not
        started yet reads it from its row."""
        if self._plan is None:
            workflow.logger.info("budget signal before the job started: its row has it")
            return
        self._plan.max_cost_usd = budget.max_cost_usd

    @workflow.signal
    def cancel(self) -> None:
        """End the job `cancelled`: in-flight items are cancelled, unstarted ones marked."""
        if self._status.is_final:
            workflow.logger.warning("cancel ignored: the job is %s", self._status.value)
            return
        self._state.cancel_requested = True

    @workflow.query
    def progress(self) -> JobProgress:
        return self._progress(in_flight_items=list(self._in_flight))

    def _progress(self, in_flight_items: list[uuid.UUID]) -> JobProgress:
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
            in_flight=len(self._in_flight),
            in_flight_items=in_flight_items,
            remaining=remaining,
            started_at=started,
            elapsed_s=round(elapsed, 1),
            eta_seconds=self._eta_seconds(remaining),
            usage=self._state.usage,
            stop_reason=self._stop_reason,
            runs=self._state.runs,
            judged=counters.judged,
        )

    # --- decisions ----------------------------------------------------------------------

    @property
    def _stop_reason(self) -> str | None:
        if self._plan and self._plan.error_policy == ErrorPolicy.STOP and self._state.first_failure:
            return f"stopped at the first failed item ({self._state.first_failure})"
        return None

    @property
    def _halting(self) -> bool:
        return self._state.cancel_requested or self._state.job_error is not None or self._stop_reason is not None

    @property
    def _can_start(self) -> bool:
        # A budget that lets fewer items start than a round's worth still lets those start.
        return not self._state.paused and self._free_slots >= max(1, min(self._start_at_least, self._budget_room))

    @property
    def _budget_room(self) -> int:
        """Items the budget lets start now (workflows/budget.py); unlimited without one."""
        plan = self._read_plan
        spent = self._state.usage.cost_usd
        item_cost = projected_item_cost(plan.estimated_item_cost_usd, spent, self._state.counters.completed)
        return items_within_budget(plan.max_cost_usd, spent, len(self._in_flight), item_cost)

    @property
    def _budget_reached(self) -> bool:
        """Not one more item fits the budget, and none is in flight whose real cost could make room."""
        return (
            self._plan is not None
            and self._plan.max_cost_usd is not None
            and not self._state.paused
            and not self._in_flight
            and self._budget_room == 0
        )

    @property
    def _refill_at(self) -> int:
        """Free slots worth a round of starts: a quarter of the concurrency, items in flight
        keeping the Claude queue busy meanwhile."""
        return max(1, self._concurrency // 4)

    @property
    def _free_slots(self) -> int:
        return min(self._concurrency - len(self._in_flight), self._budget_room)

    @property
    def _concurrency(self) -> int:
        # In batch mode an item in flight waits in a Message Batch and holds no worker slot.
        if self._read_plan.mode == DeliveryMode.BATCH:
            return self._message_batch_plan.in_flight_items
        return self._read_plan.concurrency

    @property
    def _read_plan(self) -> JobPlan:
        """The job's plan, for what happens only once it has been read (items start, say)."""
        if self._plan is None:
            raise RuntimeError(f"job {self._job_id}: its plan is used before it was read")
        return self._plan

    def _final_status(self) -> tuple[JobStatus, str | None]:
        counters = self._state.counters
        if self._state.cancel_requested:
            return JobStatus.CANCELLED, "cancelled by request"
        if self._state.job_error:
            return JobStatus.FAILED, self._state.job_error
        if self._stop_reason:
            return JobStatus.FAILED, self._stop_reason
        if counters.failed and not counters.successful:
            return JobStatus.FAILED, f"all {counters.failed} items failed"
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
        return history_is_long(request.history_event_limit)

    # --- effects ------------------------------------------------------------------------

    async def _activity(self, method: Any, arg: Any) -> Any:
        """One data step. A cancellation of this workflow comes out as asyncio.CancelledError
        (the activity's cancellation would look like its failure otherwise)."""
        try:
            return await workflow.execute_activity_method(method, arg, **DATA_STEP)
        except ActivityError as error:
            if isinstance(error.cause, CancelledError) and workflow.cancellation_reason() is not None:
                raise asyncio.CancelledError() from error
            raise

    async def _job_step(self, method: Any, arg: Any) -> Any:
        """A step of the job's own bookkeeping: it retries through outages (DATA_STEP); when it
        fails for good it is logged and the job goes on (None), because a failed job workflow
        would leave the job's row open with nothing left to close it."""
        try:
            return await self._activity(method, arg)
        except ActivityError as error:
            workflow.logger.error("job %s: %s", self._job_id, failure_message(error))
            return None

    async def _next_page(self, request: BatchJobInput) -> tuple[list[ItemRef], bool]:
        page_request = ItemPageRequest(
            job_id=request.job_id, from_position=self._state.next_position, limit=request.page_size
        )
        try:
            page = await self._activity(JobActivities.list_queued_items, page_request)
        except ActivityError as error:
            self._state.job_error = f"the job's items cannot be read: {failure_message(error)}"
            return [], True
        return page.items, len(page.items) < request.page_size

    async def _start_items(self, request: BatchJobInput, items: list[ItemRef]) -> None:
        """Start the items' workflows in one step. They report to this workflow's id; an item
        that ends without a report is found by the check of in-flight items."""
        item_ids = [item.item_id for item in items]
        # Counted as in flight before the start is confirmed: a fast item may report before that.
        self._in_flight.update(dict.fromkeys(item_ids))
        self._state.next_position = max(self._state.next_position, *(item.position + 1 for item in items))
        self._starting.update(item_ids)
        priority = item_priority(request.job_id, self._read_plan.priority)
        started = await self._job_step(
            WorkflowActivities.start_item_workflows,
            ItemWorkflowStarts(
                task_queue=workflow.info().task_queue,
                priority_key=priority.priority_key,
                fairness_key=priority.fairness_key or "",
                items=[self._item_input(request, item) for item in items],
                summaries=[item.summary for item in items],
            ),
        )
        self._starting.difference_update(item_ids)
        if started is None or started.existing:
            # Existing workflows run already (they report here) or have ended (their rows tell the
            # outcome); if the starts failed for good, the check finds the items not found.
            workflow.logger.warning("job %s: %s of %s item workflows existed already or did not start",
                                    self._job_id, len(started.existing) if started else len(items), len(items))
            self._check_unreported = True

    def _item_input(self, request: BatchJobInput, item: ItemRef) -> BatchItemInput:
        return BatchItemInput(
            job_id=request.job_id,
            item_id=item.item_id,
            user_id=self._read_plan.user_id,
            parent_workflow_id=workflow.info().workflow_id,
            claude=request.claude,
            mode=self._read_plan.mode,
            batch_size=request.message_batches.max_requests if self._read_plan.mode == DeliveryMode.BATCH else None,
            steps_version=ITEM_STEPS_VERSION,
            judge=self._read_plan.judge,
        )

    async def _start_item(self, request: BatchJobInput, item: ItemRef) -> None:
        """One item as a child workflow: how runs recorded before ITEMS_STARTED_BY_ACTIVITY replay."""
        # Counted as in flight before the start is confirmed: a fast item may report before that.
        self._in_flight[item.item_id] = None
        self._state.next_position = max(self._state.next_position, item.position + 1)
        self._starting.add(item.item_id)
        try:
            handle = await workflow.start_child_workflow(
                BatchItemWorkflow.run,
                self._item_input(request, item),
                id=item_workflow_id(item.item_id),
                static_summary=item.summary or None,
                priority=item_priority(request.job_id, self._read_plan.priority),
                # Items outlive each run of this workflow: continue-as-new must not end them.
                parent_close_policy=ParentClosePolicy.ABANDON,
                # An item that ended well is never started again; a failed one can be retried.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            # Its workflow runs already (it reports here) or has ended (its row tells the outcome).
            workflow.logger.warning("item %s: its workflow exists already; accounted from it", item.item_id)
            self._check_unreported = True
            return
        finally:
            self._starting.discard(item.item_id)
        watch = asyncio.create_task(self._await_item(item.item_id, handle))
        self._item_watches.add(watch)
        watch.add_done_callback(self._item_watches.discard)

    async def _start_message_batches(self, request: BatchJobInput) -> None:
        """The job's Message Batches workflow, unless it runs already (a continued run, say)."""
        with contextlib.suppress(WorkflowAlreadyStartedError):
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

    async def _tell_message_batches(self, signal: Callable[[MessageBatchesWorkflow], None]) -> None:
        if not self._plan or self._plan.mode != DeliveryMode.BATCH:
            return
        try:
            await workflow.get_external_workflow_handle(message_batches_workflow_id(self._job_id)).signal(signal)
        except ApplicationError as error:
            workflow.logger.info("the Message Batches workflow did not take the signal: %s", error)

    async def _pause_at_budget(self) -> None:
        """Pause as `pause` does, saying why; `resume --max-cost` raises the budget and resumes."""
        async with self._lock:
            if self._halting or self._state.paused or not self._budget_reached:
                return
            self._state.paused = True
            max_cost = self._read_plan.max_cost_usd or 0.0
            await self._change_status(JobStatus.PAUSED, pause_reason=budget_reached_reason(self._state.usage.cost_usd, max_cost))
            await self._tell_message_batches(MessageBatchesWorkflow.pause)

    async def _cancel_item(self, item_id: uuid.UUID) -> None:
        try:
            await workflow.get_external_workflow_handle(item_workflow_id(item_id)).cancel()
        except ApplicationError as error:
            # It ended on its own meanwhile; its report arrives (or arrived) as usual.
            workflow.logger.info("item %s could not be cancelled: %s", item_id, error)

    async def _change_status(self, status: JobStatus, reason: str | None = None, pause_reason: str | None = None) -> None:
        """Make a transition visible: search attributes at once, then the row and the log file."""
        self._show_status(status)
        counters = await self._job_step(
            JobActivities.set_job_status,
            JobStatusChange(job_id=self._job_id, status=status, error_message=reason, pause_reason=pause_reason),
        )
        if status.is_final and counters is not None:
            # The job ends with the counts its rows hold, whatever reports were lost or repeated.
            self._state.counters = counters
            self._report_percent()
            self._show_details()
        if status == JobStatus.PAUSED or status.is_final:
            await self._job_step(JobActivities.write_job_log, self._job_id)

    def _show_status(self, status: JobStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([search_attributes.BATCH_STATUS.value_set(status.value)])
        self._report_percent()
        self._show_details()

    def _show_details(self) -> None:
        """The job's live line in the web UI (not a history event: cheap to set on every change)."""
        progress = self._progress(in_flight_items=[])  # set on every report: no copy of the in-flight ids
        eta = f"{progress.eta_seconds:.0f} s" if progress.eta_seconds is not None else "unknown"
        # A continued run has no static summary (see BatchJobInput.summary): its details begin with it.
        carried = f"{self._summary}\n\n" if self._summary and self._state.runs > 1 else ""
        workflow.set_current_details(
            carried
            + f"**{progress.status.value}**: {progress.completed + progress.cancelled} of {progress.total} done, "
            f"{progress.successful} succeeded, {progress.failed} failed, {progress.cancelled} cancelled, "
            f"{progress.in_flight} in flight; cost ${progress.usage.cost_usd:.4f}; ETA {eta}"
            + (f"; enriched {self._state.enriched} conversations" if self._enrichment_shown else "")
        )

    def _report_percent(self) -> None:
        counters = self._state.counters
        total = self._state.total_items
        percent = 100 if total == 0 else (counters.completed + counters.cancelled) * 100 // total
        if percent != self._percent_reported:
            self._percent_reported = percent
            # The list's progress column, in the same event: on each whole percent, not each item.
            workflow.upsert_search_attributes([
                search_attributes.BATCH_PERCENT_DONE.value_set(percent),
                search_attributes.BATCH_PROGRESS.value_set(f"{counters.completed + counters.cancelled}/{total}"),
            ])
