"""Every message that crosses a Temporal boundary: workflow, activity and signal inputs and results.

They travel through `temporalio.contrib.pydantic.pydantic_data_converter`. Keep them small: ids
and references, never whole prompts' worth of generated text, so histories stay small.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.enums import (
    BatchResultType,
    ClaudeProvider,
    DeliveryMode,
    ErrorPolicy,
    ExportFormat,
    ExportStatus,
    ItemStatus,
    JobStatus,
    MessageBatchState,
    ReviewStatus,
    Tier,
)

NIL_UUID = uuid.UUID(int=0)


class Message(BaseModel):
    """The base of every message. Each builds its validator when first used: a process that uses
    a few of them (`starter.py status` reads one, `JobProgress`) does not build all (~60 ms)."""

    model_config = ConfigDict(defer_build=True)


class TokenUsage(Message):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(**{name: getattr(self, name) + getattr(other, name) for name in TokenUsage.model_fields})


# --- batch job workflow -------------------------------------------------------------------


class JobCounters(Message):
    completed: int = 0  # ended by running: successful + failed
    successful: int = 0
    failed: int = 0
    cancelled: int = 0
    judged: int = 0  # successful items whose conversation has a verdict (judging on)


class JudgePlan(Message):
    """A job's judging: the rubric version fixed at launch (every item applies the same one)."""

    rubric_name: str
    rubric_version: int


class JobPlan(Message):
    """The job row's settings and counters, read when a run starts."""

    job_id: uuid.UUID
    status: JobStatus
    total_items: int
    concurrency: int
    error_policy: ErrorPolicy
    mode: DeliveryMode = DeliveryMode.ONLINE
    # batch_jobs.priority: 1 (first) to 5 (last); 0 = Temporal's default, the middle.
    priority: int = 0
    user_id: str
    counters: JobCounters
    usage: TokenUsage
    started_at: datetime | None
    # The budget (launch --max-cost, raised by `resume --max-cost`) and the estimate's cost of its
    # costliest item, the budget's projection before items have run (workflows/budget.py).
    max_cost_usd: float | None = None
    estimated_item_cost_usd: float = 0.0
    judge: JudgePlan | None = None  # None: the job's conversations are not judged
    # Items whose rows are `processing` when a fresh run starts: an earlier run started them and
    # ended without accounting for them (its workflow was terminated, or the job is retried).
    unfinished_items: list[uuid.UUID] = Field(default_factory=list)


class BatchProgressState(Message):
    """What one run of the batch workflow hands to the next across continue-as-new."""

    total_items: int = 0
    next_position: int = 0
    in_flight: list[uuid.UUID] = Field(default_factory=list)
    counters: JobCounters = Field(default_factory=JobCounters)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    # The job's settings, read once per job (by its first run, or a retry's).
    plan: JobPlan | None = None
    paused: bool = False
    cancel_requested: bool = False
    first_failure: str | None = None
    # Why the job cannot go on (a catalog row it names was deleted, its items cannot be read).
    job_error: str | None = None
    # Measured item durations, for the ETA.
    item_seconds: float = 0.0
    items_timed: int = 0
    started_at: datetime | None = None
    runs: int = 1
    # Conversations the job's enrichment pages enriched so far (also while its items ran).
    enriched: int = 0
    # The job is in its last steps (halted or its items done, the Message Batches workflow told
    # to close): a run continued during its final enrichment goes straight on with them.
    finishing: bool = False


class ClaudeCallPlan(Message):
    """How items schedule their Claude calls. The starter fills it from its settings when the job
    starts, because workflow code reads no environment; the defaults suit workflow tests."""

    # The rate-limited queue the Claude workers poll; None = the item workflow's own queue.
    task_queue: str | None = None
    # Start-to-close of one attempt per tier, sized from the tier's max_tokens.
    attempt_timeout_s: dict[Tier, float] = Field(default_factory=lambda: dict.fromkeys(Tier, 600.0))
    judge_attempt_timeout_s: float = 600.0  # a judge call's (Settings.judge_attempt_timeout_s)
    heartbeat_timeout_s: float = 20.0
    # Requests sent per call before the item fails with the last error (a Message Batch request
    # counts as one); waiting for a turn, an outage or a refusal is no attempt.
    max_attempts: int = 6
    # The backoff of the retry policy (timeouts, lost workers), as the activity's own backoff.
    retry_base_s: float = 2.0
    retry_cap_s: float = 60.0


class MessageBatchPlan(Message):
    """How a batch-mode job packs and polls its Message Batches, from the starter's settings
    (workflow code reads no environment); the defaults suit workflow tests."""

    max_requests: int = 10_000  # per batch; the API takes up to 100,000
    max_bytes: int = 100_000_000  # per batch; the API takes up to 256 MB
    # A batch goes out once it is full, or this long after its first request was ready.
    gather_s: float = 5.0
    # Polls of an open batch start at this interval and double up to the maximum.
    poll_initial_s: float = 10.0
    poll_max_s: float = 300.0
    # Items of a batch-mode job in flight at once (waiting in a batch costs no worker slot).
    in_flight_items: int = 10_000
    # An ended batch's results are announced to their items this many at a step: each result sets
    # off about one signal back (a repair, or the next item's request), which the run's margin
    # must hold until the workflow can continue as new between steps.
    results_per_step: int = 200


class BatchJobInput(Message):
    job_id: uuid.UUID
    claude: ClaudeCallPlan = Field(default_factory=ClaudeCallPlan)
    message_batches: MessageBatchPlan = Field(default_factory=MessageBatchPlan)
    # Tuning knobs, in the input so tests can force continue-as-new on small batches.
    page_size: int = 100
    history_event_limit: int = 2000
    # How often in-flight items are checked for a workflow that ended without reporting.
    unreported_check_s: float = 60.0
    # New conversations worth an enrichment page while the job's items still run.
    enrich_every: int = 100
    # The job's static summary in the web UI. A continued run has none of its own (continue-as-new
    # takes no summary, and the server does not copy it), so its live details carry this one.
    summary: str | None = None
    state: BatchProgressState | None = None


class ItemPageRequest(Message):
    job_id: uuid.UUID
    from_position: int
    limit: int


class ItemRef(Message):
    item_id: uuid.UUID
    position: int
    summary: str = ""  # "persona · arc · topic": the item workflow's summary in the web UI


class ItemPage(Message):
    items: list[ItemRef]


# The signal that reports an item's outcome to its job's workflow (sent by complete_item, or by
# the item's workflow for an item that failed or was cancelled).
ITEM_FINISHED_SIGNAL = "item_finished"


class ItemFinished(Message):
    """Signal from an item to its job's workflow."""

    item_id: uuid.UUID
    status: ItemStatus
    error_message: str | None = None
    # A failure's type (activities/errors.py, or an API's), for counting failures by kind.
    error_type: str | None = None
    conversation_id: uuid.UUID | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    duration_s: float = 0.0
    judged: bool = False  # its conversation was given a verdict (usage includes the judging)


class JobProgress(Message):
    """Answer of the batch workflow's `progress` query."""

    job_id: uuid.UUID
    status: JobStatus
    total: int
    completed: int
    successful: int
    failed: int
    cancelled: int
    in_flight: int
    in_flight_items: list[uuid.UUID] = Field(default_factory=list)
    remaining: int
    started_at: datetime | None
    elapsed_s: float
    eta_seconds: float | None
    usage: TokenUsage
    stop_reason: str | None
    runs: int
    judged: int = 0


class CancelQueuedItems(Message):
    job_id: uuid.UUID
    # In-flight items whose rows may still be queued: they report their own end.
    in_flight: list[uuid.UUID] = Field(default_factory=list)


class UnreportedItems(Message):
    """Items that will never report (their workflows ended without it, or did not answer a
    cancel): each is recorded with this status and its reason, unless its row is final already."""

    job_id: uuid.UUID
    finished_at: datetime
    status: ItemStatus
    reasons: dict[uuid.UUID, str]


class RecordedItems(Message):
    """The outcome each row ends with: the one just recorded, or the one it already held."""

    items: list[ItemFinished]


class WorkflowIds(Message):
    workflow_ids: list[str]


class EndedWorkflows(Message):
    """Workflow id -> how its latest run ended (`terminated`, `failed`, ..., `not found`); the
    workflows still running are not listed."""

    ended: dict[str, str]


class JobStatusChange(Message):
    """A transition of the job, mirrored to its row and its log."""

    job_id: uuid.UUID
    status: JobStatus
    error_message: str | None = None
    # Why the job paused itself (its budget); any other transition clears it.
    pause_reason: str | None = None


class JobBudget(Message):
    """A new budget for a running job (`resume --max-cost`)."""

    max_cost_usd: float


# --- item workflow ------------------------------------------------------------------------


class BatchItemInput(Message):
    job_id: uuid.UUID
    item_id: uuid.UUID
    user_id: str
    # Where to report the outcome: the job workflow's id, which survives continue-as-new.
    parent_workflow_id: str
    claude: ClaudeCallPlan = Field(default_factory=ClaudeCallPlan)
    mode: DeliveryMode = DeliveryMode.ONLINE
    batch_size: int | None = None  # batch mode: the requests a Message Batch takes
    # The version of its workflow's steps the item runs (workflows/batch_item.py,
    # ITEM_STEPS_VERSION), fixed by the job that starts it: in the input it costs the item's
    # history nothing, where a patch marker costs two events. 0: an item started before it was
    # given, whose patch markers tell.
    steps_version: int = 0
    # Judge the conversation once it is stored, then report (None: no judging, as items started
    # before judging existed).
    judge: JudgePlan | None = None


class ItemWorkflowStarts(Message):
    """Item workflows a job starts at once, on its task queue, with its priority and fairness key."""

    task_queue: str
    priority_key: int | None
    fairness_key: str
    items: list[BatchItemInput]
    summaries: list[str]  # each item's summary in the web UI ("" for none), in the items' order


class StartedItemWorkflows(Message):
    """The items whose workflow existed already (it runs, or ended): not started again."""

    existing: list[uuid.UUID]


class ItemWork(Message):
    """An item's parameters, read from its row when it starts."""

    item_id: uuid.UUID
    tier: Tier
    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    template_id: uuid.UUID | None = None
    # Which of the combination's samples this item is (1-based; `launch --samples K`).
    sample: int = 1
    # The outcome the row already holds when it is final (a reset or a second start of an ended
    # item): the item is reported as it is and never generated again.
    recorded: ItemFinished | None = None
    # Message Batch requests earlier runs of the item staged (a retried item): this run numbers
    # its own after them, so none reuses a custom_id that has its result already.
    batch_requests_staged: int = 0

    def template_choice(self) -> SelectTemplateInput:
        return SelectTemplateInput(template_id=self.template_id, emotional_arc_id=self.emotional_arc_id, tier=self.tier)

    def prompt_request(self, template_id: uuid.UUID, user_id: str, conversation_id: uuid.UUID) -> ResolvePromptInput:
        """The prompt of this item with the template chosen for it, stored beside its conversation."""
        return ResolvePromptInput(
            template_id=template_id,
            persona_id=self.persona_id,
            emotional_arc_id=self.emotional_arc_id,
            training_topic_id=self.training_topic_id,
            tier=self.tier,
            sample=self.sample,
            user_id=user_id,
            conversation_id=conversation_id,
        )


class SelectTemplateInput(Message):
    template_id: uuid.UUID | None
    emotional_arc_id: uuid.UUID
    tier: Tier


class SelectedTemplate(Message):
    template_id: uuid.UUID
    auto_selected: bool


class ResolvePromptInput(Message):
    template_id: uuid.UUID
    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    tier: Tier
    sample: int = 1
    # Whose conversation the prompt is for: its text is stored beside it. None in an attempt
    # scheduled before prompts went to storage, which returns the text inline.
    user_id: str | None = None
    conversation_id: uuid.UUID | None = None


class ResolvedPrompt(Message):
    """The prompt of an item's calls. Its text is in storage at `text_key`, so no history carries
    a prompt; runs recorded before that carry it inline in `system` and `user`."""

    template_id: uuid.UUID
    template_version: int
    # What the quality check looks for in the conversation.
    persona_name: str
    topic_name: str
    text_key: str | None = None
    # Which version of the text at text_key (brightrun.storage.body_digest): its writer's process
    # may serve the read from memory.
    text_digest: str | None = None
    system: str = ""
    user: str = ""


class RepairRequest(Message):
    """Ask once more, quoting why the first reply could not be used."""

    rejected_raw_key: str
    problem: str


class GenerateInput(Message):
    job_id: uuid.UUID
    item_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: str
    tier: Tier
    prompt: ResolvedPrompt
    repair: RepairRequest | None = None
    # Requests sent to the API before the call gives up (ClaudeCallPlan.max_attempts); None for a
    # call scheduled before the plan said so: the worker's setting.
    max_attempts: int | None = None


class JudgeInput(Message):
    """One judge call: its request (the rubric as the system text, the conversation as the
    message, the verdict tool) is in storage at `text_key`, written by the prepare step."""

    job_id: uuid.UUID
    item_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: str
    rubric_name: str
    rubric_version: int
    text_key: str
    text_digest: str | None = None
    repair: RepairRequest | None = None
    max_attempts: int | None = None


class PrepareJudgingInput(Message):
    """Judge a stored conversation against a rubric version (None: the rubric's latest)."""

    job_id: uuid.UUID
    item_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: str
    rubric_name: str
    rubric_version: int | None = None


class JudgeVerdict(Message):
    """A verdict as recorded: the overall score and the rubric version it applied."""

    conversation_id: uuid.UUID
    rubric_name: str
    rubric_version: int
    overall: float
    usage: TokenUsage = Field(default_factory=TokenUsage)


class PreparedJudging(Message):
    """The judge call to make, or the verdict already recorded under this rubric version (a
    reset or a rerun): no second call is paid for."""

    request: JudgeInput | None = None
    recorded: JudgeVerdict | None = None


class RecordVerdictInput(Message):
    job_id: uuid.UUID
    request: JudgeInput
    # Every judge call that went into the verdict: the first, and the repair if there was one.
    judgings: list[GeneratedRaw]


class JudgeFailure(Message):
    """A judging that gave no verdict: what its calls cost is still the job's."""

    job_id: uuid.UUID
    item_id: uuid.UUID
    conversation_id: uuid.UUID
    usage: TokenUsage
    error_message: str


class JudgeRerunState(Message):
    """What a rerun's run hands the next across continue-as-new."""

    after: uuid.UUID | None = None  # the last conversation (business key) of the pages done
    judged: int = 0
    failed: int = 0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    runs: int = 1


class JudgeRerunInput(Message):
    """Judge a job's conversations again with a rubric version, without regenerating them."""

    job_id: uuid.UUID
    plan: JudgePlan
    claude: ClaudeCallPlan = Field(default_factory=ClaudeCallPlan)
    page_size: int = 100
    concurrency: int = 10  # judge calls in flight at once
    history_event_limit: int = 2000
    state: JudgeRerunState | None = None


class ConversationsToJudgeRequest(Message):
    job_id: uuid.UUID
    after: uuid.UUID | None
    limit: int


class ConversationToJudge(Message):
    conversation_id: uuid.UUID
    item_id: uuid.UUID
    user_id: str


class ConversationsToJudge(Message):
    conversations: list[ConversationToJudge]


class JudgeRerunProgress(Message):
    job_id: uuid.UUID
    rubric_name: str
    rubric_version: int
    judged: int  # verdicts given or found already given under this rubric version
    failed: int
    usage: TokenUsage
    paused: bool = False
    done: bool = False


class GeneratedRaw(Message):
    """A reference to the model's raw response in storage, and what it cost."""

    raw_key: str
    model: str
    stop_reason: str | None
    usage: TokenUsage
    latency_ms: int
    attempt: int
    rate_limit: dict[str, str] = Field(default_factory=dict)
    # Which version of the reply at raw_key, as ResolvedPrompt.text_digest.
    raw_digest: str | None = None
    # Who answered, and the host of the API the call went to; None in a reply recorded before
    # they were.
    provider: ClaudeProvider | None = None
    provider_host: str | None = None


class PaidReply(Message):
    """An answered call: what the activity will return, and the raw document it stores first."""

    generated: GeneratedRaw
    document: dict[str, Any]


class CallProgress(Message):
    """The heartbeat details of a Claude call: what its attempts so far have cost, and a reply
    that was paid for but not stored yet, so the next attempt stores it instead of paying again.

    Temporal's attempts are not the call's: an attempt that waited for its rate-limit turn, for
    PostgreSQL or for an account refusal to be fixed sent nothing. `requests_sent` counts what
    went to the API (counted before it goes, so a timeout or a lost worker counts it too); the
    call gives up on that count alone."""

    usage: TokenUsage = Field(default_factory=TokenUsage)
    reply: PaidReply | None = None
    requests_sent: int = 0
    # Anthropic refusing the account (activities/errors.py ANTHROPIC_REFUSED): since when, and
    # how many refusals in a row (the backoff); both reset by any other answer.
    refused_since: datetime | None = None
    refusals: int = 0
    # Attempts that failed for no reason the call knows (a bug, a corrupt stored prompt): they
    # are capped like requests, so an uncapped retry policy never loops on one.
    unexpected_failures: int = 0


class StoreConversationInput(Message):
    conversation_id: uuid.UUID
    user_id: str
    raw_key: str
    raw_digest: str | None = None
    persona: str
    training_topic: str


class StoredConversation(Message):
    final_key: str
    title: str
    turn_count: int
    quality_score: float


class LinkConversationInput(Message):
    job_id: uuid.UUID
    item_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: str
    work: ItemWork
    template_id: uuid.UUID
    # Every call that went into the conversation: the first, and the repair if there was one.
    generations: list[GeneratedRaw]
    stored: StoredConversation


class LinkedConversation(Message):
    """The conversation linked to its item; or, when the item's row had ended before the link
    (recorded as unreported while the step ran), no conversation and what the row says."""

    conversation_pk: uuid.UUID | None
    recorded: ItemFinished | None = None


class FinishItemInput(Message):
    job_id: uuid.UUID
    finished_at: datetime
    outcome: ItemFinished
    # The anthropic-ratelimit-* headers of the item's last answered call, for its usage record.
    rate_limit: dict[str, str] = Field(default_factory=dict)


class PrepareItemInput(Message):
    item_id: uuid.UUID
    user_id: str
    # Where the resolved prompt is stored: beside the item's conversation.
    conversation_id: uuid.UUID


class PreparedItem(Message):
    """An item begun, its template chosen and its prompt resolved (none of that for an item
    whose row was final already: `work.recorded`)."""

    work: ItemWork
    prompt: ResolvedPrompt | None = None


class CompleteItemInput(Message):
    """The item's last answer to validate and store, then the conversation to link and the
    outcome to record."""

    job_id: uuid.UUID
    user_id: str
    conversation_id: uuid.UUID
    work: ItemWork
    prompt: ResolvedPrompt
    # Every call that went into the conversation: the first, and the repair if there was one.
    generations: list[GeneratedRaw]
    finished_at: datetime
    outcome: ItemFinished
    rate_limit: dict[str, str] = Field(default_factory=dict)
    # The job's workflow, which the step tells of the recorded outcome (ITEM_FINISHED_SIGNAL);
    # None: the item tells it later (after judging its conversation).
    report_to: str | None


# --- Message Batches mode -----------------------------------------------------------------

# The signal that brings an item its Message Batch result (sent by the results activity).
BATCH_RESULT_SIGNAL = "batch_result"
# The signal that tells the Message Batches workflow how many requests wait for a batch (sent by
# the staging activity for the first request of a gathering and for one that fills a batch).
REQUESTS_WAITING_SIGNAL = "requests_waiting"


class StageBatchRequest(Message):
    """One request of an item for a Message Batch; `sequence` counts the item's requests, so a
    resubmission or a repair gets a custom_id of its own."""

    generate: GenerateInput | JudgeInput  # a generation's request, or a judge's
    sequence: int
    batch_size: int | None = None  # the requests a batch takes: a request that fills one says so


class BatchResult(Message):
    """An item's Message Batch result, as the item workflow acts on it."""

    custom_id: str
    result_type: BatchResultType
    generated: GeneratedRaw | None = None  # succeeded: the reply is in storage
    error_type: str | None = None  # errored: the API's error type, e.g. invalid_request_error
    error_message: str | None = None


class CheckBatchRequest(Message):
    """An item that has waited long for a Message Batch result asks after its request."""

    job_id: uuid.UUID
    custom_id: str


class CheckedBatchRequest(Message):
    result: BatchResult | None = None  # stored, its announcement lost
    batches_running: bool  # the job's Message Batches workflow runs: the result will come


class OpenMessageBatch(Message):
    id: uuid.UUID
    anthropic_batch_id: str
    request_count: int
    polls: int = 0
    next_poll_at: datetime
    results_stored: bool = False  # ended, its results stored: what is left is announcing them


class MessageBatchesState(Message):
    """What one run of the Message Batches workflow hands to the next across continue-as-new."""

    # Requests known to wait for a batch, as staging and claims counted them (the rows decide
    # which): not 0 while any waits, since a staging that finds none before it tells.
    waiting: int = 0
    first_waiting_at: datetime | None = None
    open_batches: list[OpenMessageBatch] = Field(default_factory=list)
    paused: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    closing: bool = False  # the job sends no more requests
    submitted_batches: int = 0
    submitted_requests: int = 0
    runs: int = 1


class MessageBatchesInput(Message):
    job_id: uuid.UUID
    plan: MessageBatchPlan = Field(default_factory=MessageBatchPlan)
    history_event_limit: int = 2000
    state: MessageBatchesState | None = None


class SubmitBatchInput(Message):
    job_id: uuid.UUID
    message_batch_id: uuid.UUID  # fixed by the workflow before the first attempt
    max_requests: int
    max_bytes: int


class SubmittedBatch(Message):
    anthropic_batch_id: str | None  # None: no request was waiting
    request_count: int = 0
    # Requests of the job still waiting once the batch took its own (None from attempts before
    # it was counted).
    remaining: int | None = None


class MessageBatchRef(Message):
    job_id: uuid.UUID
    message_batch_id: uuid.UUID
    anthropic_batch_id: str


class AnnounceBatchResults(Message):
    ref: MessageBatchRef
    limit: int


class PolledBatch(Message):
    status: MessageBatchState
    request_counts: dict[str, int] = Field(default_factory=dict)


class MessageBatchesProgress(Message):
    """Answer of the Message Batches workflow's `progress` query."""

    job_id: uuid.UUID
    waiting: int
    open_batches: list[OpenMessageBatch]
    submitted_batches: int
    submitted_requests: int
    paused: bool
    cancel_requested: bool
    runs: int = 1  # this run and those it continued from


# --- enrichment ---------------------------------------------------------------------------


class EnrichPageInput(Message):
    """Enrich one page (the worker's ENRICHMENT_PAGE_SIZE) of a job's conversations not enriched yet."""

    job_id: uuid.UUID


class EnrichedPage(Message):
    enriched: int  # rows this call enriched (0 when another attempt did them first)
    more: bool  # the job still has conversations to enrich


# --- export -------------------------------------------------------------------------------


class SplitShare(Message):
    name: str
    fraction: float


class ExportSelection(Message):
    """What an export takes and how it writes it: with the seed, all that decides its bytes."""

    user: str | None  # None: every user's (an admin's export)
    # The jobs other users shared with `user`: their conversations are the user's to export too.
    shared_job_ids: list[uuid.UUID] = Field(default_factory=list)
    job_ids: list[uuid.UUID] = Field(default_factory=list)
    review_status: ReviewStatus | None = ReviewStatus.APPROVED
    min_quality: float | None = None
    # Only conversations the judge scored at or above this (overall, 1-5); None: no judge filter.
    min_judge_score: float | None = None
    format: ExportFormat = ExportFormat.MESSAGES
    splits: list[SplitShare] = Field(default_factory=lambda: [SplitShare(name="train", fraction=1.0)])
    seed: int = 0
    system_prompt: str
    # Conversations not written by Anthropic's API (the offline stand-in's, or of unknown
    # provider) are exported only when asked, and the card then says the text is placeholder.
    allow_stand_in: bool = False


class ExportInput(Message):
    export_id: uuid.UUID
    selection: ExportSelection
    # An absolute directory on the worker's machine, or s3://bucket/prefix.
    location: str


class ExportPlan(Message):
    total: int
    split_sizes: dict[str, int]


class ExportCursor(Message):
    """Where the next page starts in the export's order (the seeded hash, then the id)."""

    order_key: str
    conversation_id: uuid.UUID


class ExportPageInput(Message):
    export: ExportInput
    plan: ExportPlan
    page: int
    first_position: int
    after: ExportCursor | None = None


class ProviderCount(Message):
    """Conversations an export wrote of one provider (a ClaudeProvider, or "unknown": written
    before providers were recorded) at one API host."""

    provider: str
    api_host: str | None
    conversations: int


def add_provider_counts(*counts: list[ProviderCount]) -> list[ProviderCount]:
    """The counts added up by provider and host, in the order the card lists them."""
    total: dict[tuple[str, str | None], int] = {}
    for count in (c for some in counts for c in some):
        key = (count.provider, count.api_host)
        total[key] = total.get(key, 0) + count.conversations
    ordered = sorted(total.items(), key=lambda item: (item[0][0], item[0][1] is None, item[0][1] or ""))
    return [ProviderCount(provider=provider, api_host=host, conversations=n) for (provider, host), n in ordered]


class ExportPage(Message):
    count: int
    last: ExportCursor | None
    # The page's conversations by provider and host; None from a page written before pages said.
    sources: list[ProviderCount] | None = None


class ExportFinishInput(Message):
    export: ExportInput
    plan: ExportPlan
    pages: int
    # What the pages wrote, added up: the card and manifest say it. None in a finish scheduled by
    # a run whose pages did not say: the selection is counted instead.
    sources: list[ProviderCount] | None = None


class ExportResult(Message):
    export_id: uuid.UUID
    location: str
    count: int
    splits: dict[str, int]
    # Paths relative to the location: data files, card and manifest.
    files: list[str]
    # Conversations not written by Claude's API (the offline stand-in's): placeholder text.
    placeholder: int = 0


class ExportProgress(Message):
    export_id: uuid.UUID
    status: ExportStatus
    total: int
    written: int


class ExportFailure(Message):
    export_id: uuid.UUID
    message: str
    # Where its part files are, to remove them; None in a failure scheduled before it was sent.
    location: str | None = None


class OutageDetails(Message):
    """The details of a database_unavailable or storage_unavailable failure: which part the step
    waits for, and since when (`starter.py status` reads them from the pending activity)."""

    part: str
    since: datetime | None = None


class RefusalDetails(Message):
    """The details of an anthropic_refused failure (online calls and the Message Batches
    endpoints alike): what Anthropic said, and since when the step has been refused
    (`starter.py status` reads them from the pending activity)."""

    reason: str
    since: datetime | None = None
