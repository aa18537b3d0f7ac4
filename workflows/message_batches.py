"""The Message Batches of one batch-mode job: gathers the requests its items stage, submits them
as Anthropic Message Batches, polls the open ones on durable timers (no worker slot is held while
a batch runs) and has their results brought to the items. Pause stops new batches; cancel cancels
the open ones. Items do everything else themselves, as online."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import NoReturn

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.message_batches import MessageBatchActivities
    from models.enums import MessageBatchState
    from models.messages import (
        REQUESTS_WAITING_SIGNAL,
        AnnounceBatchResults,
        MessageBatchesInput,
        MessageBatchesProgress,
        MessageBatchesState,
        MessageBatchRef,
        OpenMessageBatch,
        SubmitBatchInput,
    )
    from workflows.config import MESSAGE_BATCH_RESULTS_STEP, MESSAGE_BATCH_STEP, history_is_long


# Results are stored in one step, then announced in steps with room to continue as new between
# them; runs started before announce them all in one step.
RESULTS_ANNOUNCED_IN_STEPS = "results-announced-in-steps"
# A fresh run assumes a request waits until its first claim says how many do: requests left by
# a run that ended early (terminated) would otherwise keep later stagings from counting 1.
CLAIMS_FROM_THE_START = "claims-from-the-start"


@workflow.defn(name="MessageBatchesWorkflow")
class MessageBatchesWorkflow:
    @workflow.init
    def __init__(self, request: MessageBatchesInput) -> None:
        # Signals of the first activation arrive before `run` starts: the state must be in place.
        self._job_id = request.job_id
        self._plan = request.plan
        self._state = request.state or MessageBatchesState()
        self._fresh = self._state.runs == 1  # not continued as new
        # The most requests told of while a submission runs: its claim's count predates them.
        self._told_while_submitting = 0
        # A fresh run's `waiting` is assumed until a request tells or a claim counts.
        self._waiting_assumed = False

    @workflow.run
    async def run(self, request: MessageBatchesInput) -> MessageBatchesProgress:
        if self._fresh and workflow.patched(CLAIMS_FROM_THE_START) and not self._state.waiting:
            self._state.waiting, self._state.first_waiting_at = 1, workflow.now()
            self._waiting_assumed = True
        while not self._finished:
            await self._wait_for_work(request)
            if self._continues_before_due_work(request):
                await self._continue_as_new(request)
            if self._state.cancel_requested and not self._state.cancel_sent:
                await workflow.execute_activity_method(
                    MessageBatchActivities.cancel_batches, self._job_id, **MESSAGE_BATCH_STEP
                )
                self._state.cancel_sent = True
            if self._submission_due:
                await self._submit()
            for batch in [b for b in self._state.open_batches if b.next_poll_at <= workflow.now()]:
                if self._continues_before_due_work(request):
                    break
                await self._poll(batch, request)
            if self._history_is_long(request):
                await self._continue_as_new(request)
        return self.progress()

    # --- signals and queries ------------------------------------------------------------

    @workflow.signal(name=REQUESTS_WAITING_SIGNAL)
    def requests_waiting(self, count: int) -> None:
        """`count` requests wait for a batch (their rows say which), as the staging activity
        counted them: it tells of the first of a gathering and of one that fills a batch."""
        if not self._state.waiting or self._waiting_assumed:
            self._state.first_waiting_at = workflow.now()  # a gathering starts with its first request
            self._waiting_assumed = False
        self._state.waiting = max(self._state.waiting, count)
        self._told_while_submitting = max(self._told_while_submitting, count)

    @workflow.signal
    def request_ready(self) -> None:
        """An item started before the staging told of requests staged one (they signal each)."""
        self.requests_waiting(self._state.waiting + 1)

    @workflow.signal
    def pause(self) -> None:
        """No new batch goes out; open ones finish and their results are kept."""
        self._state.paused = True

    @workflow.signal
    def resume(self) -> None:
        self._state.paused = False

    @workflow.signal
    def cancel(self) -> None:
        """The job is cancelled: its open batches are cancelled, nothing new goes out."""
        self._state.cancel_requested = True

    @workflow.signal
    def close(self) -> None:
        """The job's items are done: end once the open batches have brought their results."""
        self._state.closing = True

    @workflow.query
    def progress(self) -> MessageBatchesProgress:
        return MessageBatchesProgress(
            job_id=self._job_id,
            waiting=self._state.waiting,
            open_batches=self._state.open_batches,
            submitted_batches=self._state.submitted_batches,
            submitted_requests=self._state.submitted_requests,
            paused=self._state.paused,
            cancel_requested=self._state.cancel_requested,
            runs=self._state.runs,
        )

    # --- decisions ----------------------------------------------------------------------

    @property
    def _finished(self) -> bool:
        if self._state.open_batches:
            return False
        return self._state.cancel_requested or (self._state.closing and not self._state.waiting)

    @property
    def _submission_due(self) -> bool:
        state = self._state
        gathered_until = self._gathered_until()
        if state.paused or state.cancel_requested or gathered_until is None:
            return False
        return state.waiting >= self._plan.max_requests or state.closing or workflow.now() >= gathered_until

    def _gathered_until(self) -> datetime | None:
        """When the requests waiting for a batch have gathered long enough; None while none waits."""
        first = self._state.first_waiting_at
        if not self._state.waiting or first is None:
            return None
        return first + timedelta(seconds=self._plan.gather_s)

    def _next_deadline(self) -> datetime | None:
        """The next poll or the end of the gathering, whichever comes first."""
        deadlines = [batch.next_poll_at for batch in self._state.open_batches]
        gathered_until = self._gathered_until()
        if gathered_until is not None and not self._state.paused and not self._state.cancel_requested:
            deadlines.append(gathered_until)
        return min(deadlines) if deadlines else None

    def _has_work(self) -> bool:
        now = workflow.now()
        return (
            self._finished
            or self._submission_due
            or (self._state.cancel_requested and not self._state.cancel_sent)
            or any(batch.next_poll_at <= now for batch in self._state.open_batches)
        )

    def _history_is_long(self, request: MessageBatchesInput) -> bool:
        return history_is_long(request.history_event_limit)

    def _continues_before_due_work(self, request: MessageBatchesInput) -> bool:
        """Whether to continue as new before the next step rather than after all due steps: the
        signals each step sets off (a result's repair, the next item's request) would otherwise
        pile up past the run's margin (a 10,000-item job's run reached 2,004 events)."""
        return self._history_is_long(request) and workflow.patched(RESULTS_ANNOUNCED_IN_STEPS)

    # --- effects ------------------------------------------------------------------------

    async def _wait_for_work(self, request: MessageBatchesInput) -> None:
        """Until something is due, the next deadline moves (then the caller asks again), or the
        history is long. A signal that changes neither (one more request for the gathering
        batch) wakes nothing: its event is the only one it adds, no timer is cancelled and
        started again per request."""
        if self._has_work() or self._history_is_long(request):
            return
        deadline = self._next_deadline()
        with contextlib.suppress(TimeoutError):  # a poll or a submission is due
            await workflow.wait_condition(
                lambda: self._has_work() or self._next_deadline() != deadline or self._history_is_long(request),
                timeout=max(timedelta(0), deadline - workflow.now()) if deadline else None,
            )

    async def _submit(self) -> None:
        message_batch_id = workflow.uuid4()  # fixed before the first attempt: a retry finds its batch
        self._told_while_submitting = 0
        self._waiting_assumed = False
        submitted = await workflow.execute_activity_method(
            MessageBatchActivities.submit_batch,
            SubmitBatchInput(
                job_id=self._job_id,
                message_batch_id=message_batch_id,
                max_requests=self._plan.max_requests,
                max_bytes=self._plan.max_bytes,
            ),
            **MESSAGE_BATCH_STEP,
        )
        state = self._state
        if submitted.anthropic_batch_id is None:
            state.waiting = 0  # every staged request is in a batch already
        else:
            state.open_batches.append(
                OpenMessageBatch(
                    id=message_batch_id,
                    anthropic_batch_id=submitted.anthropic_batch_id,
                    request_count=submitted.request_count,
                    next_poll_at=workflow.now() + timedelta(seconds=self._plan.poll_initial_s),
                )
            )
            state.submitted_batches += 1
            state.submitted_requests += submitted.request_count
            state.waiting = max(0, state.waiting - submitted.request_count)  # runs started before
        if submitted.remaining is not None:  # what the claim left, and what was staged since
            state.waiting = max(submitted.remaining, self._told_while_submitting)
        state.first_waiting_at = workflow.now() if state.waiting else None

    async def _continue_as_new(self, request: MessageBatchesInput) -> NoReturn:
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            request.model_copy(update={"state": self._state.model_copy(update={"runs": self._state.runs + 1})})
        )

    async def _poll(self, batch: OpenMessageBatch, request: MessageBatchesInput) -> None:
        """Polls the batch; once it has ended, stores its results and announces them a step at
        a time. A run that grows long between steps leaves the rest to the next run (the batch
        stays open with its results stored, due at once)."""
        ref = MessageBatchRef(job_id=self._job_id, message_batch_id=batch.id, anthropic_batch_id=batch.anthropic_batch_id)
        if not batch.results_stored:
            polled = await workflow.execute_activity_method(MessageBatchActivities.poll_batch, ref, **MESSAGE_BATCH_STEP)
            batch.polls += 1
            if polled.status != MessageBatchState.ENDED:
                interval = min(self._plan.poll_max_s, self._plan.poll_initial_s * 2**batch.polls)
                batch.next_poll_at = workflow.now() + timedelta(seconds=interval)
                return
            if not workflow.patched(RESULTS_ANNOUNCED_IN_STEPS):  # a run started before: all in one step
                await workflow.execute_activity_method(
                    MessageBatchActivities.collect_results, ref, **MESSAGE_BATCH_RESULTS_STEP
                )
                self._state.open_batches.remove(batch)
                return
            if self._history_is_long(request):
                return  # the next run polls again and finds it ended
            await workflow.execute_activity_method(MessageBatchActivities.store_results, ref, **MESSAGE_BATCH_RESULTS_STEP)
            batch.results_stored = True
        step = AnnounceBatchResults(ref=ref, limit=self._plan.results_per_step)
        while not self._history_is_long(request):
            if not await workflow.execute_activity_method(MessageBatchActivities.announce_results, step, **MESSAGE_BATCH_STEP):
                self._state.open_batches.remove(batch)
                return
