"""In-memory stand-ins for the activities, registered under the real names, for workflow tests
on the time-skipping server. They record what the workflows asked for, so tests can assert it."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.data_errors import outage
from activities.errors import (
    CATALOG_ROW_MISSING,
    DATABASE_ERROR,
    DATABASE_UNAVAILABLE,
    INVALID_OUTPUT,
    INVALID_VERDICT,
    claude_http_error,
    permanent,
)
from activities.item_workflows import WorkflowActivities
from activities.items import ItemActivities
from activities.message_batches import batch_custom_id
from brightrun.temporal_client import signal_if_running
from models.enums import BatchResultType, DeliveryMode, ErrorPolicy, ItemStatus, JobStatus, MessageBatchState, Tier
from models.messages import (
    BATCH_RESULT_SIGNAL,
    REQUESTS_WAITING_SIGNAL,
    AnnounceBatchResults,
    BatchResult,
    CancelQueuedItems,
    CheckBatchRequest,
    CheckedBatchRequest,
    EnrichedPage,
    EnrichPageInput,
    ExportCursor,
    ExportFailure,
    ExportFinishInput,
    ExportInput,
    ExportPage,
    ExportPageInput,
    ExportPlan,
    ExportResult,
    FinishItemInput,
    GeneratedRaw,
    GenerateInput,
    ItemFinished,
    ItemPage,
    ItemPageRequest,
    ItemRef,
    ItemWork,
    JobCounters,
    JobPlan,
    JobStatusChange,
    JudgeFailure,
    JudgeInput,
    JudgePlan,
    JudgeVerdict,
    LinkConversationInput,
    LinkedConversation,
    MessageBatchRef,
    PolledBatch,
    PreparedJudging,
    PrepareJudgingInput,
    RecordedItems,
    RecordVerdictInput,
    ResolvedPrompt,
    ResolvePromptInput,
    SelectedTemplate,
    SelectTemplateInput,
    StageBatchRequest,
    StoreConversationInput,
    StoredConversation,
    SubmitBatchInput,
    SubmittedBatch,
    TokenUsage,
    UnreportedItems,
)
from models.workflow_ids import item_workflow_id, message_batches_workflow_id


class MemoryStorage:
    """Storage kept in a dict, with the calls activities make: for activity tests."""

    conversation_bucket = "conversation-files"

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    async def put_json(self, bucket: str, key: str, document: object, read_back_soon: bool = False) -> str:
        self.objects[key] = json.loads(json.dumps(document))
        return ""

    async def get_bytes(self, bucket: str, key: str, digest: str | None = None) -> bytes:
        return json.dumps(self.objects[key]).encode()


def fake_reply(request: GenerateInput, attempt: int) -> GeneratedRaw:
    """What the Claude step returns for a request: a reference to its reply, and its usage."""
    return GeneratedRaw(
        raw_key=f"raw/{request.user_id}/{request.conversation_id}_raw{'_repair' if request.repair else ''}.json",
        model="fake",
        stop_reason="end_turn",
        usage=TokenUsage(input_tokens=100, output_tokens=50),
        latency_ms=1,
        attempt=attempt,
    )


@dataclass
class FakeItem:
    item_id: uuid.UUID
    position: int
    status: ItemStatus = ItemStatus.QUEUED
    error_message: str | None = None
    error_type: str | None = None
    finish_calls: int = 0


@dataclass
class FakeBatch:
    """One job's rows, plus the knobs a test turns."""

    job_id: uuid.UUID
    items: list[FakeItem]
    concurrency: int = 3
    error_policy: ErrorPolicy = ErrorPolicy.CONTINUE
    mode: DeliveryMode = DeliveryMode.ONLINE
    # item position -> error message raised by the Claude step
    failing_positions: dict[int, str] = field(default_factory=dict)
    # item position -> how many of its replies the store step rejects as invalid output
    unusable_replies: dict[int, int] = field(default_factory=dict)
    claude_delay_s: float = 0.0
    # While set and not open, every Claude call waits for it: items stay in flight.
    claude_gate: asyncio.Event | None = None
    catalog_intact: bool = True
    # Every job status write fails for good (a permanent database error).
    failing_status_writes: bool = False
    # While set and not open, start_job, begin_item or finish_item wait for it.
    start_gate: asyncio.Event | None = None
    begin_gate: asyncio.Event | None = None
    finish_gate: asyncio.Event | None = None
    job_status: JobStatus = JobStatus.QUEUED
    job_error: str | None = None
    status_changes: list[JobStatus] = field(default_factory=list)
    log_writes: int = 0
    begin_calls: int = 0
    finish_entered: int = 0  # finish_item calls, counted before they pass the finish gate
    begin_outages: int = 0  # begin_item calls still to fail as if PostgreSQL were down
    start_calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    generate_calls: int = 0
    generate_requests: list[GenerateInput] = field(default_factory=list)
    # the task queue each Claude call ran on
    claude_queues: list[str] = field(default_factory=list)
    conversation_positions: dict[uuid.UUID, int] = field(default_factory=dict)
    # Items whose conversation was enriched, and how many were when the job's final status was written.
    enriched: set[uuid.UUID] = field(default_factory=set)
    enrich_page_size: int = 2
    enrich_delay_s: float = 0.0  # how long a page takes
    enriched_when_final: int | None = None
    # Items with a final status at each enrichment page.
    items_done_at_enrichment: list[int] = field(default_factory=list)
    # Judging: the job's rubric version (None: not judged); item position -> how many of its
    # verdicts the record step rejects as invalid; the verdicts recorded, by conversation.
    judge: JudgePlan | None = None
    invalid_verdicts: dict[int, int] = field(default_factory=dict)
    verdicts: dict[uuid.UUID, JudgeVerdict] = field(default_factory=dict)
    judge_calls: int = 0

    @classmethod
    def of(cls, size: int, **knobs: Any) -> FakeBatch:
        return cls(uuid.uuid4(), [FakeItem(uuid.uuid4(), position) for position in range(size)], **knobs)

    def plan(self) -> JobPlan:
        """What start_job reads from the rows."""
        return JobPlan(
            job_id=self.job_id,
            status=self.job_status,
            total_items=len(self.items),
            concurrency=self.concurrency,
            error_policy=self.error_policy,
            mode=self.mode,
            user_id="test-user",
            counters=self.counters(),
            usage=TokenUsage(),
            started_at=None,
            unfinished_items=[i.item_id for i in self.items if i.status == ItemStatus.PROCESSING],
            judge=self.judge,
        )

    def item(self, item_id: uuid.UUID) -> FakeItem:
        return next(i for i in self.items if i.item_id == item_id)

    def count(self, status: ItemStatus) -> int:
        return sum(1 for i in self.items if i.status == status)

    def counters(self) -> JobCounters:
        completed, failed = self.count(ItemStatus.COMPLETED), self.count(ItemStatus.FAILED)
        return JobCounters(
            completed=completed + failed, successful=completed, failed=failed, cancelled=self.count(ItemStatus.CANCELLED),
            judged=len(self.verdicts),
        )


async def _passed(gate: asyncio.Event | None) -> None:
    if gate is not None:
        await gate.wait()


class FakeActivities:
    """The data steps in memory; the check of item workflows is the real one, against `client`."""

    def __init__(self, batch: FakeBatch, client: Client) -> None:
        self.batch = batch
        self.client = client

    @activity.defn(name="start_job")
    async def start_job(self, job_id: uuid.UUID) -> JobPlan:
        self.batch.start_calls += 1
        await _passed(self.batch.start_gate)
        if not self.batch.catalog_intact:
            raise permanent("the job cannot run: persona 1234 was deleted from the catalog", CATALOG_ROW_MISSING)
        if self.batch.job_status == JobStatus.QUEUED:
            self.batch.job_status = JobStatus.PROCESSING
        return self.batch.plan()

    @activity.defn(name="list_queued_items")
    async def list_queued_items(self, request: ItemPageRequest) -> ItemPage:
        queued = [
            ItemRef(item_id=i.item_id, position=i.position)
            for i in self.batch.items
            if i.position >= request.from_position and i.status == ItemStatus.QUEUED
        ]
        return ItemPage(items=queued[: request.limit])

    @activity.defn(name="begin_item")
    async def begin_item(self, item_id: uuid.UUID) -> ItemWork:
        self.batch.begin_calls += 1
        await _passed(self.batch.begin_gate)
        if self.batch.begin_outages:
            self.batch.begin_outages -= 1
            raise outage(DATABASE_UNAVAILABLE, "connection refused")
        item = self.batch.item(item_id)
        recorded = None
        if item.status.is_final:
            recorded = ItemFinished(item_id=item_id, status=item.status, error_message=item.error_message)
        elif item.status == ItemStatus.QUEUED:
            item.status = ItemStatus.PROCESSING
            self.batch.in_flight += 1
            self.batch.max_in_flight = max(self.batch.max_in_flight, self.batch.in_flight)
        return ItemWork(
            item_id=item_id,
            tier=Tier.TEMPLATE,
            persona_id=uuid.uuid4(),
            emotional_arc_id=uuid.uuid4(),
            training_topic_id=uuid.uuid4(),
            recorded=recorded,
        )

    @activity.defn(name="select_template")
    async def select_template(self, request: SelectTemplateInput) -> SelectedTemplate:
        return SelectedTemplate(template_id=uuid.uuid4(), auto_selected=True)

    @activity.defn(name="resolve_template")
    async def resolve_template(self, request: ResolvePromptInput) -> ResolvedPrompt:
        # Where the real step stores the text; the fake Claude step never reads it.
        return ResolvedPrompt(
            template_id=request.template_id,
            template_version=1,
            text_key=f"requests/{request.user_id}/{request.conversation_id}_prompt.json",
            persona_name="p",
            topic_name="t",
        )

    @activity.defn(name="generate_conversation")
    async def generate_conversation(self, request: GenerateInput) -> GeneratedRaw:
        self.batch.generate_calls += 1
        self.batch.generate_requests.append(request)
        self.batch.claude_queues.append(activity.info().task_queue)
        await _passed(self.batch.claude_gate)
        if self.batch.claude_delay_s:
            await asyncio.sleep(self.batch.claude_delay_s)
        position = self.batch.item(request.item_id).position
        self.batch.conversation_positions[request.conversation_id] = position
        if position in self.batch.failing_positions:
            raise permanent(self.batch.failing_positions[position], claude_http_error(400))
        return fake_reply(request, activity.info().attempt)

    @activity.defn(name="store_conversation")
    async def store_conversation(self, request: StoreConversationInput) -> StoredConversation:
        position = self.batch.conversation_positions[request.conversation_id]
        if self.batch.unusable_replies.get(position, 0) > 0:
            self.batch.unusable_replies[position] -= 1
            problem = "the reply is not valid JSON: Expecting value: line 1 column 1 (char 0)"
            raise permanent(f"{problem}; raw response kept at {request.raw_key}", INVALID_OUTPUT, problem)
        return StoredConversation(final_key=request.raw_key.replace("_raw", ""), title="t", turn_count=6, quality_score=1.0)

    @activity.defn(name="link_conversation")
    async def link_conversation(self, request: LinkConversationInput) -> LinkedConversation:
        return LinkedConversation(conversation_pk=uuid.uuid4())

    @activity.defn(name="finish_item")
    async def finish_item(self, request: FinishItemInput) -> ItemStatus:
        self.batch.finish_entered += 1
        await _passed(self.batch.finish_gate)
        item = self.batch.item(request.outcome.item_id)
        item.finish_calls += 1
        if item.status.is_final:
            return item.status
        if item.status == ItemStatus.PROCESSING:
            self.batch.in_flight -= 1
        item.status = request.outcome.status
        item.error_message, item.error_type = request.outcome.error_message, request.outcome.error_type
        return item.status

    @activity.defn(name="record_unreported_items")
    async def record_unreported_items(self, request: UnreportedItems) -> RecordedItems:
        recorded = []
        for item_id, reason in request.reasons.items():
            item = self.batch.item(item_id)
            if not item.status.is_final:
                item.status, item.error_message = request.status, reason
            recorded.append(ItemFinished(item_id=item_id, status=item.status, error_message=item.error_message))
        return RecordedItems(items=recorded)

    @activity.defn(name="enrich_conversations")
    async def enrich_conversations(self, request: EnrichPageInput) -> EnrichedPage:
        self.batch.items_done_at_enrichment.append(sum(i.status.is_final for i in self.batch.items))
        await asyncio.sleep(self.batch.enrich_delay_s)
        todo = [i.item_id for i in self.batch.items if i.status == ItemStatus.COMPLETED and i.item_id not in self.batch.enriched]
        page = todo[: self.batch.enrich_page_size]
        self.batch.enriched.update(page)
        return EnrichedPage(enriched=len(page), more=len(todo) > len(page))

    @activity.defn(name="cancel_queued_items")
    async def cancel_queued_items(self, request: CancelQueuedItems) -> int:
        queued = [i for i in self.batch.items if i.status == ItemStatus.QUEUED and i.item_id not in request.in_flight]
        for item in queued:
            item.status = ItemStatus.CANCELLED
        return len(queued)

    @activity.defn(name="set_job_status")
    async def set_job_status(self, change: JobStatusChange) -> JobCounters:
        if self.batch.failing_status_writes:
            raise permanent("the job's row cannot be written", DATABASE_ERROR)
        if not self.batch.job_status.is_final:
            self.batch.job_status = change.status
            self.batch.job_error = change.error_message
            self.batch.status_changes.append(change.status)
            if change.status.is_final:
                self.batch.enriched_when_final = len(self.batch.enriched)
        return self.batch.counters()

    @activity.defn(name="write_job_log")
    async def write_job_log(self, job_id: uuid.UUID) -> int:
        self.batch.log_writes += 1
        return self.batch.log_writes

    @activity.defn(name="prepare_judging")
    async def prepare_judging(self, request: PrepareJudgingInput) -> PreparedJudging:
        recorded = self.batch.verdicts.get(request.conversation_id)
        if recorded is not None:
            return PreparedJudging(recorded=recorded)
        assert request.rubric_version is not None
        return PreparedJudging(request=JudgeInput(
            job_id=request.job_id, item_id=request.item_id, conversation_id=request.conversation_id,
            user_id=request.user_id, rubric_name=request.rubric_name, rubric_version=request.rubric_version,
            text_key=f"requests/{request.user_id}/{request.conversation_id}_judge.json",
        ))

    @activity.defn(name="judge_conversation")
    async def judge_conversation(self, request: JudgeInput) -> GeneratedRaw:
        self.batch.judge_calls += 1
        suffix = "_repair" if request.repair else ""
        return GeneratedRaw(
            raw_key=f"raw/{request.user_id}/{request.conversation_id}_judge_raw{suffix}.json", model="fake-judge",
            stop_reason="tool_use", usage=TokenUsage(input_tokens=20, output_tokens=5, cost_usd=0.001), latency_ms=1,
            attempt=activity.info().attempt,
        )

    @activity.defn(name="record_verdict")
    async def record_verdict(self, request: RecordVerdictInput) -> JudgeVerdict:
        position = self.batch.item(request.request.item_id).position
        if self.batch.invalid_verdicts.get(position, 0) > 0:
            self.batch.invalid_verdicts[position] -= 1
            problem = "topic_accuracy: score: Input should be less than or equal to 5"
            raise permanent(f"the judge's reply is no valid verdict: {problem}", INVALID_VERDICT, problem)
        verdict = JudgeVerdict(
            conversation_id=request.request.conversation_id, rubric_name=request.request.rubric_name,
            rubric_version=request.request.rubric_version, overall=4.0,
            usage=sum((j.usage for j in request.judgings), TokenUsage()),
        )
        self.batch.verdicts[verdict.conversation_id] = verdict
        return verdict

    @activity.defn(name="record_judge_failure")
    async def record_judge_failure(self, request: JudgeFailure) -> None:
        pass

    def all(self) -> list:
        # The merged item steps run this fake's steps, as the real ones run the real steps.
        items = ItemActivities(self, self, self, self.client)
        return [
            WorkflowActivities(self.client).start_item_workflows,
            WorkflowActivities(self.client).ended_workflows,
            WorkflowActivities(self.client).request_cancellation,
            self.record_unreported_items,
            self.start_job,
            self.list_queued_items,
            items.prepare_item,
            items.complete_item,
            self.begin_item,
            self.select_template,
            self.resolve_template,
            self.generate_conversation,
            self.store_conversation,
            self.link_conversation,
            self.finish_item,
            self.enrich_conversations,
            self.cancel_queued_items,
            self.set_job_status,
            self.write_job_log,
            self.prepare_judging,
            self.judge_conversation,
            self.record_verdict,
            self.record_judge_failure,
        ]


@dataclass(frozen=True)
class ScriptedResult:
    """The result the fake Message Batches API gives one request."""

    type: BatchResultType
    error_type: str | None = None
    error_message: str | None = None


SUCCEEDED = ScriptedResult(BatchResultType.SUCCEEDED)
EXPIRED = ScriptedResult(BatchResultType.EXPIRED)


def errored(error_type: str, message: str = "the API could not process the request") -> ScriptedResult:
    return ScriptedResult(BatchResultType.ERRORED, error_type, message)


@dataclass
class FakeMessageBatch:
    """One Message Batch at the fake API."""

    id: uuid.UUID
    anthropic_batch_id: str
    custom_ids: list[str]
    status: MessageBatchState = MessageBatchState.IN_PROGRESS
    cancelled: bool = False
    # When each poll was scheduled (the server's clock: skipped time included).
    polled_at: list[datetime] = field(default_factory=list)
    results: dict[str, BatchResult] = field(default_factory=dict)  # stored once the batch ended
    announced: set[str] = field(default_factory=set)
    announce_steps: int = 0


@dataclass
class FakeMessageBatchApi:
    """The Message Batches API and the job's staged requests, in memory, plus the knobs a test turns."""

    # item position -> the results of its requests in order (any further request succeeds)
    results: dict[int, list[ScriptedResult]] = field(default_factory=dict)
    # Polls a batch answers `in_progress` before it ends.
    polls_to_end: int = 1
    # While set and not open, every batch stays in progress (a cancelled one still ends).
    end_gate: asyncio.Event | None = None
    # While set and not open, a submission waits after its claim (it reads, then creates the batch).
    submit_gate: asyncio.Event | None = None
    submissions_held: int = 0
    # custom_id -> the staged request, in staging order; those not in a batch yet are waiting.
    staged: dict[str, StageBatchRequest] = field(default_factory=dict)
    batches: list[FakeMessageBatch] = field(default_factory=list)
    cancel_calls: int = 0
    # custom_ids that waited for a batch when their job was cancelled: no batch sends them.
    cancelled_waiting: set[str] = field(default_factory=set)
    checks: int = 0  # items that asked after their request's result
    # Results are stored but their announcements never reach the items (a lost signal).
    announcements_lost: bool = False

    def batch_of(self, custom_id: str) -> int:
        """The position of the batch that carried the request."""
        return next(n for n, batch in enumerate(self.batches) if custom_id in batch.custom_ids)

    def requests_of(self, item_id: uuid.UUID) -> list[str]:
        return [custom_id for custom_id, staged in self.staged.items() if staged.generate.item_id == item_id]

    @property
    def waiting(self) -> list[str]:
        sent = {custom_id for batch in self.batches for custom_id in batch.custom_ids}
        return [c for c in self.staged if c not in sent and c not in self.cancelled_waiting]


class FakeMessageBatchActivities:
    """The Message Batches steps against FakeMessageBatchApi; results reach the item workflows by
    the real signal, through `client`. Staging records the request like a Claude call (so the
    store step of FakeActivities knows whose reply it checks)."""

    def __init__(self, batch: FakeBatch, api: FakeMessageBatchApi, client: Client) -> None:
        self.batch = batch
        self.api = api
        self.client = client

    @activity.defn(name="stage_batch_request")
    async def stage_request(self, request: StageBatchRequest) -> str:
        generate = request.generate
        assert isinstance(generate, GenerateInput), "the fake jobs judge nothing"
        custom_id = batch_custom_id(generate.item_id, request.sequence)
        if custom_id not in self.api.staged:
            self.api.staged[custom_id] = request
            self.batch.generate_requests.append(generate)
            self.batch.conversation_positions[generate.conversation_id] = self.batch.item(generate.item_id).position
        waiting = len(self.api.waiting)
        if waiting and (waiting in (1, request.batch_size) or activity.info().attempt > 1):  # as the real step
            # A Message Batches workflow that ended (terminated) takes no signal: as the real step,
            # staging goes on (a failing step would retry forever and hold time-skipping).
            await signal_if_running(
                self.client, message_batches_workflow_id(generate.job_id), REQUESTS_WAITING_SIGNAL, waiting
            )
        return custom_id

    @activity.defn(name="submit_message_batch")
    async def submit_batch(self, request: SubmitBatchInput) -> SubmittedBatch:
        known = next((b for b in self.api.batches if b.id == request.message_batch_id), None)
        if known is None:
            claimed = self.api.waiting[: request.max_requests]
            remaining = len(self.api.waiting) - len(claimed)
            if self.api.submit_gate is not None and not self.api.submit_gate.is_set():
                self.api.submissions_held += 1
                await self.api.submit_gate.wait()
            if not claimed:
                return SubmittedBatch(anthropic_batch_id=None, remaining=remaining)
            known = FakeMessageBatch(request.message_batch_id, f"msgbatch_{len(self.api.batches) + 1:04d}", claimed)
            self.api.batches.append(known)
            return SubmittedBatch(
                anthropic_batch_id=known.anthropic_batch_id, request_count=len(claimed), remaining=remaining
            )
        return SubmittedBatch(
            anthropic_batch_id=known.anthropic_batch_id, request_count=len(known.custom_ids), remaining=len(self.api.waiting)
        )

    @activity.defn(name="poll_message_batch")
    async def poll_batch(self, ref: MessageBatchRef) -> PolledBatch:
        batch = self._batch(ref)
        batch.polled_at.append(activity.info().current_attempt_scheduled_time)
        gate_open = self.api.end_gate is None or self.api.end_gate.is_set()
        if batch.status == MessageBatchState.CANCELING or (gate_open and len(batch.polled_at) >= self.api.polls_to_end):
            batch.status = MessageBatchState.ENDED
        return PolledBatch(status=batch.status)

    @activity.defn(name="store_message_batch_results")
    async def store_results(self, ref: MessageBatchRef) -> int:
        batch = self._batch(ref)
        for custom_id in batch.custom_ids:
            batch.results.setdefault(custom_id, self._result(custom_id, cancelled=batch.cancelled))
        return len(batch.custom_ids)

    @activity.defn(name="announce_message_batch_results")
    async def announce_results(self, request: AnnounceBatchResults) -> int:
        batch = self._batch(request.ref)
        unannounced = [custom_id for custom_id in batch.results if custom_id not in batch.announced]
        batch.announce_steps += 1
        for custom_id in unannounced[: request.limit]:
            if not self.api.announcements_lost:
                await self._announce(self.api.staged[custom_id], batch.results[custom_id])
            batch.announced.add(custom_id)
        return len(unannounced[request.limit :])

    @activity.defn(name="cancel_message_batches")
    async def cancel_batches(self, job_id: uuid.UUID) -> int:
        self.api.cancel_calls += 1
        self.api.cancelled_waiting.update(self.api.waiting)
        open_batches = [b for b in self.api.batches if b.status == MessageBatchState.IN_PROGRESS]
        for batch in open_batches:
            batch.status, batch.cancelled = MessageBatchState.CANCELING, True
        return len(open_batches)

    @activity.defn(name="check_batch_request")
    async def check_request(self, request: CheckBatchRequest) -> CheckedBatchRequest:
        self.api.checks += 1
        stored = next((b.results[request.custom_id] for b in self.api.batches if request.custom_id in b.results), None)
        try:
            described = await self.client.get_workflow_handle(message_batches_workflow_id(request.job_id)).describe()
            running = described.status == WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            running = False
        return CheckedBatchRequest(result=stored, batches_running=running)

    def _batch(self, ref: MessageBatchRef) -> FakeMessageBatch:
        return next(b for b in self.api.batches if b.anthropic_batch_id == ref.anthropic_batch_id)

    def _result(self, custom_id: str, cancelled: bool) -> BatchResult:
        staged = self.api.staged[custom_id]
        if cancelled:
            return BatchResult(custom_id=custom_id, result_type=BatchResultType.CANCELED)
        script = self.api.results.get(self.batch.item(staged.generate.item_id).position, [])
        scripted = script[staged.sequence - 1] if staged.sequence <= len(script) else SUCCEEDED
        if scripted.type == BatchResultType.SUCCEEDED:
            assert isinstance(staged.generate, GenerateInput), "the fake jobs judge nothing"
            generated = fake_reply(staged.generate, staged.sequence)
            return BatchResult(custom_id=custom_id, result_type=scripted.type, generated=generated)
        return BatchResult(
            custom_id=custom_id,
            result_type=scripted.type,
            error_type=scripted.error_type,
            error_message=scripted.error_message,
        )

    async def _announce(self, staged: StageBatchRequest, result: BatchResult) -> None:
        try:
            await self.client.get_workflow_handle(item_workflow_id(staged.generate.item_id)).signal(
                BATCH_RESULT_SIGNAL, result
            )
        except RPCError as exc:
            # NOT_FOUND: the item ended meanwhile (cancelled), nothing waits for its result.
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise

    def all(self) -> list:
        return [
            self.stage_request,
            self.submit_batch,
            self.poll_batch,
            self.store_results,
            self.announce_results,
            self.cancel_batches,
            self.check_request,
        ]


class FakeExportActivities:
    """The export's steps in memory: `total` conversations, pages of `page_size`."""

    def __init__(self, total: int, page_size: int) -> None:
        self.total = total
        self.page_size = page_size
        self.pages: list[int] = []

    @activity.defn(name="plan_export")
    async def plan_export(self, request: ExportInput) -> ExportPlan:
        return ExportPlan(total=self.total, split_sizes={"train": self.total})

    @activity.defn(name="write_export_page")
    async def write_export_page(self, request: ExportPageInput) -> ExportPage:
        count = max(0, min(self.page_size, self.total - request.first_position))
        self.pages.append(count)
        last = ExportCursor(order_key=f"{request.first_position + count:032x}", conversation_id=uuid.UUID(int=count))
        return ExportPage(count=count, last=last if count else None)

    @activity.defn(name="finish_export")
    async def finish_export(self, request: ExportFinishInput) -> ExportResult:
        return ExportResult(export_id=request.export.export_id, location=request.export.location, count=self.total,
                            splits={"train": self.total}, files=["data/train.jsonl", "README.md", "manifest.json"])

    @activity.defn(name="fail_export")
    async def fail_export(self, failure: ExportFailure) -> None:
        return None

    def all(self) -> list:
        return [self.plan_export, self.write_export_page, self.finish_export, self.fail_export]
