"""One batch item, as its own workflow: its history is the item's log in the Temporal web UI."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.claude import ClaudeActivities
    from activities.conversations import ConversationActivities
    from activities.errors import (
        ANTHROPIC_INVALID_REQUEST,
        BATCH_REQUEST_ATTEMPTS_EXHAUSTED,
        INVALID_OUTPUT,
        ITEM_FAILED,
        MESSAGE_BATCHES_ENDED,
    )
    from activities.items import ItemActivities
    from activities.jobs import JobActivities
    from activities.message_batches import MessageBatchActivities
    from activities.templates import TemplateActivities
    from models.enums import BatchResultType, DeliveryMode, ItemStatus, Tier
    from models.messages import (
        BATCH_RESULT_SIGNAL,
        BatchItemInput,
        BatchResult,
        CheckBatchRequest,
        CompleteItemInput,
        FinishItemInput,
        GeneratedRaw,
        GenerateInput,
        ItemFinished,
        ItemWork,
        JudgeInput,
        JudgePlan,
        LinkConversationInput,
        PrepareItemInput,
        PrepareJudgingInput,
        RepairRequest,
        ResolvedPrompt,
        StageBatchRequest,
        StoreConversationInput,
        StoredConversation,
        TokenUsage,
    )
    from models.workflow_ids import item_conversation_id, message_batches_workflow_id
    from workflows.config import (
        BATCH_RESULT_CHECK_CAP,
        BATCH_RESULT_FIRST_CHECK,
        DATA_STEP,
        LOCAL_DATA_STEP,
        claude_step,
        retry_cannot_help,
    )
    from workflows.judging import JudgeCall, JudgeCallFailed, judge
    from workflows.message_batches import MessageBatchesWorkflow
    from workflows.step_failures import failure_message, failure_type, repair_problem, spent_on_failed_call

# The staging activity tells the Message Batches workflow of the first request of a gathering
# (a signal per request outgrew its history at 10,000 items); items started before signal each.
STAGING_TELLS_THE_BATCHES = "staging-tells-the-batches"
# An item's data steps run as two activities, one before its call and one after (each activity
# cost its history three events and a workflow task); items started before run seven.
ITEM_STEPS_MERGED = "item-steps-merged"
# The steps of items the job starts now, given in their input (BatchItemInput.steps_version):
# 1: the data steps, and the record of an item that failed or was cancelled, try first as local
# activities (workflows/config.py, LOCAL_DATA_STEP); staging tells the batches. Items started
# before run the steps their patch markers tell.
ITEM_STEPS_VERSION = 1
# An item waiting for a Message Batch result asks after it now and then (BATCH_RESULT_FIRST_CHECK):
# items started before wait on the signal alone.
ITEMS_ASK_AFTER_BATCH_RESULTS = "items-ask-after-batch-results"


def local_step_failure(step: Callable[..., Awaitable[Any]], error: ActivityError | ApplicationError) -> ActivityError:
    """A local activity's failure as an activity's: its own failure arrives bare (a timeout comes
    wrapped), and the item's code reads one shape."""
    if isinstance(error, ActivityError):
        return error
    wrapped = ActivityError(
        "Local activity failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type=step.__name__,
        activity_id="",
        retry_state=None,
    )
    wrapped.__cause__ = error
    return wrapped


class BatchRequestFailed(Exception):
    """A Message Batch request that no later batch can fix; the message goes on the item row."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


# Outside the sandbox: it re-imported this module and built its proxies for every item's run,
# about a sixth of the worker's CPU at the engine's full rate (py-spy). This module keeps no state
# between runs and reads time, randomness and ids only through `workflow`; the saved histories'
# replay test guards its determinism.
@workflow.defn(name="BatchItemWorkflow", sandboxed=False)
class BatchItemWorkflow:
    def __init__(self) -> None:
        # Message Batch results by custom_id; a result signal may come twice.
        self._batch_results: dict[str, BatchResult] = {}
        self._batch_requests = 0

    @workflow.run
    async def run(self, request: BatchItemInput) -> ItemFinished:
        self._started = workflow.now()
        self._usage = TokenUsage()  # of every Claude call, failed items included
        self._rate_limit: dict[str, str] = {}  # the budget the last answered call left
        self._recorded: ItemStatus | None = None  # the status complete_item recorded (and reported)
        # An item that judges its conversation reports itself once judged: complete_item does not.
        self._reports_after_judging = request.judge is not None
        try:
            self._local_steps = request.steps_version >= 1
            if self._local_steps or workflow.patched(ITEM_STEPS_MERGED):
                prepared = await self._data_step(
                    ItemActivities.prepare_item,
                    PrepareItemInput(
                        item_id=request.item_id,
                        user_id=request.user_id,
                        conversation_id=item_conversation_id(request.item_id),
                    ),
                )
                work, prompt = prepared.work, prepared.prompt
            else:
                work = await workflow.execute_activity_method(JobActivities.begin_item, request.item_id, **DATA_STEP)
                prompt = None
            self._batch_requests = work.batch_requests_staged
            # A final row (a reset, or a second start of an ended item) is reported as it is: no
            # second Claude call, no second conversation.
            if work.recorded:
                outcome = work.recorded
            elif prompt is not None:
                outcome = await self._produce_and_record(request, work, prompt)
            else:
                outcome = await self._produce(request, work)
        except ActivityError as error:
            if not isinstance(error.cause, CancelledError):
                outcome = self._outcome(
                    request, ItemStatus.FAILED, error_message=failure_message(error), error_type=failure_type(error)
                )
            else:
                await self._report_cancelled(request)
                raise
        except BatchRequestFailed as error:
            outcome = self._outcome(request, ItemStatus.FAILED, error_message=str(error), error_type=error.error_type)
        except asyncio.CancelledError:
            await self._report_cancelled(request)
            raise

        await self._report(request, outcome)
        if outcome.status == ItemStatus.FAILED:
            # Fail the item's workflow too, so the web UI lists it among the failed.
            raise ApplicationError(outcome.error_message or "item failed", type=ITEM_FAILED, non_retryable=True)
        return outcome

    async def _produce_and_record(self, request: BatchItemInput, work: ItemWork, prompt: ResolvedPrompt) -> ItemFinished:
        """Generate the item's conversation, then validate, store and link it and record the item
        completed, in one step."""
        conversation_id = item_conversation_id(request.item_id)
        generations = [await self._generate(request, conversation_id, work.tier, prompt)]
        try:
            return await self._complete(request, conversation_id, work, prompt, generations)
        except ActivityError as error:
            if not (isinstance(error.cause, ApplicationError) and error.cause.type == INVALID_OUTPUT):
                raise
            # One repair: ask again, quoting what was wrong; a second failure fails the item.
            repair = RepairRequest(rejected_raw_key=generations[0].raw_key, problem=repair_problem(error.cause))
            generations.append(await self._generate(request, conversation_id, work.tier, prompt, repair))
            return await self._complete(request, conversation_id, work, prompt, generations)

    async def _complete(
        self,
        request: BatchItemInput,
        conversation_id: uuid.UUID,
        work: ItemWork,
        prompt: ResolvedPrompt,
        generations: list[GeneratedRaw],
    ) -> ItemFinished:
        outcome = self._outcome(request, ItemStatus.COMPLETED, conversation_id=conversation_id)
        complete = CompleteItemInput(
            job_id=request.job_id,
            user_id=request.user_id,
            conversation_id=conversation_id,
            work=work,
            prompt=prompt,
            generations=generations,
            finished_at=workflow.now(),
            outcome=outcome,
            rate_limit=self._rate_limit,
            report_to=None if self._reports_after_judging else request.parent_workflow_id,
        )

        async def record() -> None:
            self._recorded = await self._data_step(ItemActivities.complete_item, complete)

        # Run to its end like the report: a cancel that came while the step ran would record the
        # item cancelled beside the conversation the step still links.
        await self._to_the_end(record())
        if request.judge is not None and self._recorded == ItemStatus.COMPLETED:
            return await self._judge(request, request.judge, conversation_id)
        return outcome

    async def _judge(self, request: BatchItemInput, plan: JudgePlan, conversation_id: uuid.UUID) -> ItemFinished:
        """Judge the stored conversation (workflows/judging.py); the item is completed whatever
        the verdict, and a judging that failed leaves its conversation unjudged."""
        judged = await judge(
            self._data_step,
            request.claude,
            PrepareJudgingInput(
                job_id=request.job_id,
                item_id=request.item_id,
                conversation_id=conversation_id,
                user_id=request.user_id,
                rubric_name=plan.rubric_name,
                rubric_version=plan.rubric_version,
            ),
            call=self._judge_in_batch(request) if request.mode == DeliveryMode.BATCH else None,
        )
        self._usage += judged.usage
        if judged.error_message:
            workflow.logger.warning("%s", judged.error_message, extra={"item_id": str(request.item_id)})
        return self._outcome(
            request, ItemStatus.COMPLETED, conversation_id=conversation_id, judged=judged.verdict is not None
        )

    async def _produce(self, request: BatchItemInput, work: ItemWork) -> ItemFinished:
        """Generate, validate, store and link the item's conversation, a step each (a run started
        before the steps were merged)."""
        # The same for every run of the item (a retry, a reset, a second start), so storage keys
        # and the row are written once; runs recorded before drew a random one.
        if workflow.patched("conversation-id-from-item"):
            conversation_id = item_conversation_id(request.item_id)
        else:
            conversation_id = workflow.uuid4()
        selected = await workflow.execute_activity_method(
            TemplateActivities.select_template, work.template_choice(), **DATA_STEP
        )
        prompt = await workflow.execute_activity_method(
            TemplateActivities.resolve_template,
            work.prompt_request(selected.template_id, request.user_id, conversation_id),
            **DATA_STEP,
        )
        generations = [await self._generate(request, conversation_id, work.tier, prompt)]
        try:
            stored = await self._store(request, conversation_id, prompt, generations[-1])
        except ActivityError as error:
            if not (isinstance(error.cause, ApplicationError) and error.cause.type == INVALID_OUTPUT):
                raise
            # One repair: ask again, quoting what was wrong; a second failure fails the item.
            repair = RepairRequest(rejected_raw_key=generations[0].raw_key, problem=repair_problem(error.cause))
            generations.append(await self._generate(request, conversation_id, work.tier, prompt, repair))
            stored = await self._store(request, conversation_id, prompt, generations[-1])
        await workflow.execute_activity_method(
            JobActivities.link_conversation,
            LinkConversationInput(
                job_id=request.job_id,
                item_id=request.item_id,
                conversation_id=conversation_id,
                user_id=request.user_id,
                work=work,
                template_id=selected.template_id,
                generations=generations,
                stored=stored,
            ),
            **DATA_STEP,
        )
        return self._outcome(request, ItemStatus.COMPLETED, conversation_id=conversation_id)

    async def _generate(
        self,
        request: BatchItemInput,
        conversation_id: uuid.UUID,
        tier: Tier,
        prompt: ResolvedPrompt,
        repair: RepairRequest | None = None,
    ) -> GeneratedRaw:
        generate = GenerateInput(
            job_id=request.job_id,
            item_id=request.item_id,
            conversation_id=conversation_id,
            user_id=request.user_id,
            tier=tier,
            prompt=prompt,
            repair=repair,
            max_attempts=request.claude.max_attempts,
        )
        if request.mode == DeliveryMode.BATCH:
            generated = await self._generate_in_batch(request, generate)
        else:
            try:
                generated = await workflow.execute_activity_method(
                    ClaudeActivities.generate_conversation,
                    generate,
                    **claude_step(request.claude, tier, workflow.info().priority),
                )
            except ActivityError as error:
                self._usage += spent_on_failed_call(error)
                raise
            self._rate_limit = generated.rate_limit
        self._usage += generated.usage  # every attempt's, failed ones included
        return generated

    def _judge_in_batch(self, request: BatchItemInput) -> JudgeCall:
        """The judge's call as a request of the job's Message Batches, like a generation's."""

        async def in_batch(judge_input: JudgeInput) -> GeneratedRaw:
            try:
                return await self._generate_in_batch(request, judge_input)
            except BatchRequestFailed as error:
                raise JudgeCallFailed(str(error)) from None

        return in_batch

    async def _generate_in_batch(self, request: BatchItemInput, generate: GenerateInput | JudgeInput) -> GeneratedRaw:
        """Through the job's Message Batches: stage the request (staging tells the job's Message
        Batches workflow), wait for its result (no worker slot is held meanwhile). An errored
        request other than a bad one, and an expired or canceled one, goes into a later batch, up
        to the attempt cap."""
        last_problem = ""
        for _ in range(request.claude.max_attempts):
            self._batch_requests += 1
            custom_id = await workflow.execute_activity_method(
                MessageBatchActivities.stage_request,
                StageBatchRequest(generate=generate, sequence=self._batch_requests, batch_size=request.batch_size),
                **DATA_STEP,
            )
            # A run started before tells of each request.
            if not (request.steps_version >= 1 or workflow.patched(STAGING_TELLS_THE_BATCHES)):
                await workflow.get_external_workflow_handle(message_batches_workflow_id(request.job_id)).signal(
                    MessageBatchesWorkflow.request_ready
                )
            result = await self._batch_result(request, custom_id)
            if result.result_type == BatchResultType.SUCCEEDED and result.generated:
                return result.generated
            if result.result_type == BatchResultType.ERRORED:
                last_problem = f"{result.error_message} ({result.error_type})"
                if result.error_type == ANTHROPIC_INVALID_REQUEST:
                    raise BatchRequestFailed(
                        f"Claude API refused the request in a Message Batch: {last_problem}", ANTHROPIC_INVALID_REQUEST
                    )
            else:
                last_problem = f"the request {result.result_type.value}"
            workflow.logger.warning("batch request %s: %s; it goes into a later batch", custom_id, last_problem)
        raise BatchRequestFailed(
            f"gave up after {request.claude.max_attempts} Message Batch requests; last: {last_problem}",
            BATCH_REQUEST_ATTEMPTS_EXHAUSTED,
        )


    async def _batch_result(self, request: BatchItemInput, custom_id: str) -> BatchResult:
        """The request's result, as the Message Batches workflow announces it. Asked after now and
        then: a result stored but never announced is taken from its row, and a Message Batches
        workflow that ended without bringing it fails the item (`retry` sends it again) instead
        of leaving it waiting for good."""
        asks = workflow.patched(ITEMS_ASK_AFTER_BATCH_RESULTS)
        wait = BATCH_RESULT_FIRST_CHECK
        while custom_id not in self._batch_results:
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(lambda: custom_id in self._batch_results, timeout=wait if asks else None)
            if custom_id in self._batch_results:
                break
            checked = await workflow.execute_activity_method(
                MessageBatchActivities.check_request,
                CheckBatchRequest(job_id=request.job_id, custom_id=custom_id),
                **DATA_STEP,
            )
            if checked.result is not None:
                self.batch_result(checked.result)
            elif not checked.batches_running:
                raise BatchRequestFailed(
                    "the job's Message Batches workflow ended before this item's request had its result; "
                    "retry the job to send it again",
                    MESSAGE_BATCHES_ENDED,
                )
            wait = min(2 * wait, BATCH_RESULT_CHECK_CAP)
        return self._batch_results[custom_id]

    @workflow.signal(name=BATCH_RESULT_SIGNAL)
    def batch_result(self, result: BatchResult) -> None:
        self._batch_results.setdefault(result.custom_id, result)

    async def _store(
        self, request: BatchItemInput, conversation_id: uuid.UUID, prompt: ResolvedPrompt, generated: GeneratedRaw
    ) -> StoredConversation:
        return await workflow.execute_activity_method(
            ConversationActivities.store_conversation,
            StoreConversationInput(
                conversation_id=conversation_id,
                user_id=request.user_id,
                raw_key=generated.raw_key,
                persona=prompt.persona_name,
                training_topic=prompt.topic_name,
            ),
            **DATA_STEP,
        )

    def _outcome(
        self,
        request: BatchItemInput,
        status: ItemStatus,
        error_message: str | None = None,
        conversation_id: uuid.UUID | None = None,
        error_type: str | None = None,
        judged: bool = False,
    ) -> ItemFinished:
        duration = (workflow.now() - self._started).total_seconds()
        return ItemFinished(
            item_id=request.item_id,
            status=status,
            error_message=error_message,
            error_type=error_type,
            conversation_id=conversation_id,
            usage=self._usage,
            duration_s=duration,
            judged=judged,
        )

    async def _report_cancelled(self, request: BatchItemInput) -> None:
        """Cancelled by the job (cancel, or the stop policy): the Claude call is abandoned, and the
        row and the job still learn what happened."""
        await self._report(request, self._outcome(request, ItemStatus.CANCELLED))

    async def _report(self, request: BatchItemInput, outcome: ItemFinished) -> None:
        """Write the outcome to the item's row, then tell the job's workflow. Shielded: a cancel
        that arrives while an ended item reports must not lose the report."""
        await self._to_the_end(self._record_and_signal(request, outcome))

    async def _data_step(self, step: Callable[..., Awaitable[Any]], arg: Any) -> Any:
        """A database and storage step of the item: one local try first (items started before
        ITEM_STEPS_VERSION 1 skip it), then, unless the try failed for good or was cancelled, as an
        activity retried through any outage."""
        if self._local_steps:
            try:
                return await workflow.execute_local_activity_method(step, arg, **LOCAL_DATA_STEP)
            except (ActivityError, ApplicationError) as error:
                failed = local_step_failure(step, error)
            if isinstance(failed.cause, CancelledError) or retry_cannot_help(failed):
                raise failed
            workflow.logger.warning("%s goes on as an activity: %s", step.__name__, failure_message(failed))
        return await workflow.execute_activity_method(step, arg, **DATA_STEP)

    @staticmethod
    async def _to_the_end(step: Awaitable[None]) -> None:
        """Run a step that records the item to its end, even when the item is cancelled while it
        runs: the step is not cancelled, and the item's cancellation goes on once it has ended
        (a step that failed meanwhile wrote nothing: the item is cancelled all the same)."""
        running = asyncio.ensure_future(step)
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            with contextlib.suppress(ActivityError):
                await running
            raise

    async def _record_and_signal(self, request: BatchItemInput, outcome: ItemFinished) -> None:
        if self._recorded and not self._reports_after_judging:  # complete_item recorded the outcome and told the job
            workflow.logger.info("item %s", self._recorded.value, extra={"item_id": str(outcome.item_id)})
            return
        if self._recorded:  # recorded by complete_item; told here, once its conversation was judged
            recorded = self._recorded
        else:
            recorded = await self._data_step(
                JobActivities.finish_item,
                FinishItemInput(
                    job_id=request.job_id, finished_at=workflow.now(), outcome=outcome, rate_limit=self._rate_limit
                ),
            )
        # The row keeps the first final status; the job must count the same one.
        outcome = outcome.model_copy(update={"status": recorded})
        workflow.logger.info("item %s", outcome.status.value, extra={"item_id": str(outcome.item_id)})
        with workflow.unsafe.imports_passed_through():
            # Here, not at the top: workflows.batch_job imports this module.
            from workflows.batch_job import BatchJobWorkflow
        try:
            await workflow.get_external_workflow_handle(request.parent_workflow_id).signal(
                BatchJobWorkflow.item_finished, outcome
            )
        except ApplicationError as error:
            # The job's workflow has ended (this run is a reset or a late start of the item): the
            # row holds the outcome, and the job's counters come from the rows.
            workflow.logger.warning("the job's workflow did not take the report: %s", error)
