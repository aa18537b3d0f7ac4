"""SQLAlchemy tables. The schema itself comes only from the Alembic migrations in migrations/;
these mappings describe it for queries, and the migration test checks the two agree."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Select,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
    ProcessingStatus,
    ReviewStatus,
    Tier,
    UserRole,
    sql_in_list,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, uuid.UUID: UUID(as_uuid=True)}


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, server_default=func.gen_random_uuid())


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def _updated_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


def _check_in(column: str, enum: type, name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({sql_in_list(enum)})", name=name)


class Persona(Base):
    __tablename__ = "personas"
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text)
    traits: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    is_active: Mapped[bool] = mapped_column(server_default="true")
    created_at: Mapped[datetime] = _created_at()


class EmotionalArc(Base):
    __tablename__ = "emotional_arcs"
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    arc_type: Mapped[str] = mapped_column(String(100), index=True)
    description: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(server_default="true")
    created_at: Mapped[datetime] = _created_at()


class TrainingTopic(Base):
    __tablename__ = "training_topics"
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(server_default="true")
    created_at: Mapped[datetime] = _created_at()


class PromptTemplate(Base):
    __tablename__ = "prompt_templates"
    __table_args__ = (
        _check_in("tier", Tier, "tier"),
        UniqueConstraint("name", "version", name="uq_prompt_templates_name_version"),
    )
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(20))
    arc_type: Mapped[str | None] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(server_default="true")
    # The static instructions (cacheable) and the per-item part with {placeholders}.
    system_text: Mapped[str] = mapped_column(Text)
    template_text: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(server_default="1")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


# A job's items in flight at once (--concurrency): what a job's workflow is measured to hold (a
# batch-mode job runs 10,000 at once), enough for an account's whole rate at Claude's latency
# (4,000 calls/min at 40 s a call is 2,667 in flight). CLAUDE_CALLS_PER_MINUTE paces the calls.
MAX_JOB_CONCURRENCY = 10_000


class BatchJob(Base):
    __tablename__ = "batch_jobs"
    __table_args__ = (
        _check_in("status", JobStatus, "status"),
        _check_in("tier", Tier, "tier"),
        _check_in("error_handling", ErrorPolicy, "error_handling"),
        _check_in("mode", DeliveryMode, "mode"),
        CheckConstraint(f"concurrent_processing BETWEEN 1 AND {MAX_JOB_CONCURRENCY}", name="concurrent_processing"),
    )
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200))
    job_type: Mapped[str] = mapped_column(String(50), server_default="conversation_generation")
    status: Mapped[str] = mapped_column(String(20), server_default=JobStatus.QUEUED.value, index=True)
    priority: Mapped[int] = mapped_column(server_default="0")
    total_items: Mapped[int] = mapped_column(server_default="0")
    completed_items: Mapped[int] = mapped_column(server_default="0")
    failed_items: Mapped[int] = mapped_column(server_default="0")
    successful_items: Mapped[int] = mapped_column(server_default="0")
    cancelled_items: Mapped[int] = mapped_column(server_default="0")
    tier: Mapped[str] = mapped_column(String(20))
    shared_parameters: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    concurrent_processing: Mapped[int] = mapped_column(server_default="3")
    error_handling: Mapped[str] = mapped_column(String(20), server_default=ErrorPolicy.CONTINUE.value)
    mode: Mapped[str] = mapped_column(String(10), server_default=DeliveryMode.ONLINE.value)
    created_by: Mapped[str] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    cache_read_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    # Ten decimals: summing thousands of per-item costs must not drift.
    cost_usd: Mapped[float] = mapped_column(Numeric(16, 10, asdecimal=False), server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    estimated_time_remaining: Mapped[int | None] = mapped_column(Integer)
    # What `launch --dry-run` printed for this job (tokens, costs, seconds): shown beside the actual.
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The budget (`--max-cost`): the job pauses itself before it would spend more.
    max_cost_usd: Mapped[float | None] = mapped_column(Numeric(16, 10, asdecimal=False))
    # Why the job paused itself, e.g. "budget reached"; cleared on resume.
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # Conversations judged, and what judging cost (cost_usd includes it).
    judged_items: Mapped[int] = mapped_column(Integer, server_default="0")
    judge_cost_usd: Mapped[float] = mapped_column(Numeric(16, 10, asdecimal=False), server_default="0")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        _check_in("processing_status", ProcessingStatus, "processing_status"),
        _check_in("review_status", ReviewStatus, "review_status"),
        _check_in("provider", ClaudeProvider, "provider"),
        Index("ix_conversations_created_by_content_hash", "created_by", "content_hash"),
        # The review queue and lists, oldest first and a page at a time (keyset on created_at, id):
        # by job, by owner, or everyone's (an admin's), each with or without a review status.
        Index("ix_conversations_batch_job_id_review_status_created_at", "batch_job_id", "review_status", "created_at", "id"),
        Index("ix_conversations_created_by_review_status_created_at", "created_by", "review_status", "created_at", "id"),
        Index("ix_conversations_review_status_created_at", "review_status", "created_at", "id"),
        Index("ix_conversations_created_at", "created_at", "id"),
        Index("ix_conversations_batch_job_id_judge_score", "batch_job_id", "judge_score"),
        # The queue of a job ordered worst or best judged first (service/review.py SORTS: the
        # score with the unjudged last, then created_at, id), a page at a time by keyset.
        Index(
            "ix_conversations_batch_job_id_review_status_worst_first", "batch_job_id", "review_status",
            text("coalesce(judge_score, 6)"), "created_at", "id",
        ),
        Index(
            "ix_conversations_batch_job_id_review_status_best_first", "batch_job_id", "review_status",
            text("coalesce(- judge_score, 0)"), "created_at", "id",
        ),
        # The near-duplicates (one conversation in tens): the queue filtered to them, and its
        # count, read only these entries (the included columns answer the other filters).
        Index(
            "ix_conversations_near_duplicate_review_status_created_at", "review_status", "created_at", "id",
            postgresql_include=["created_by", "batch_job_id", "quality_score"], postgresql_where=text("near_duplicate"),
        ),
    )
    id: Mapped[uuid.UUID] = _id()
    # The business key: used in storage paths and by people; never the target of a foreign key.
    conversation_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text)
    processing_status: Mapped[str] = mapped_column(String(20), server_default=ProcessingStatus.GENERATED.value)
    raw_storage_path: Mapped[str] = mapped_column(Text)
    final_storage_path: Mapped[str] = mapped_column(Text)
    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id"))
    emotional_arc_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("emotional_arcs.id"))
    training_topic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_topics.id"))
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prompt_templates.id"))
    tier: Mapped[str] = mapped_column(String(20))
    turn_count: Mapped[int] = mapped_column(Integer)
    quality_score: Mapped[float | None] = mapped_column(Float)
    # Model, tokens, latency, attempts, stop reason: the generation's own record.
    generation_metadata: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    # Who wrote it (Anthropic's API or the offline stand-in) and the API host the call went to;
    # NULL for a conversation written before they were recorded (its provider is unknown).
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_host: Mapped[str | None] = mapped_column(String(255))
    # Review: a person's (or a bulk rule's) verdict, who gave it, when, and why for a rejection.
    review_status: Mapped[str] = mapped_column(String(20), server_default=ReviewStatus.PENDING_REVIEW.value)
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_reason: Mapped[str | None] = mapped_column(Text)
    # Enrichment (activities/enrichment.py); NULL until enriched_at is set. Token counts are
    # estimates (about 4 characters a token): no tokenizer runs offline.
    user_turns: Mapped[int | None] = mapped_column(Integer)
    assistant_turns: Mapped[int | None] = mapped_column(Integer)
    user_tokens: Mapped[int | None] = mapped_column(Integer)
    assistant_tokens: Mapped[int | None] = mapped_column(Integer)
    quality_parts: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Ids and names of the persona, arc, topic, template (and version) and the model.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # The MinHash signature of the turns' word shingles, compared with the same user's others.
    minhash: Mapped[bytes | None] = mapped_column(BYTEA)
    near_duplicate: Mapped[bool] = mapped_column(server_default="false")
    # The business key of the earlier conversation this one nearly repeats.
    near_duplicate_of: Mapped[uuid.UUID | None] = mapped_column()
    # [{"check": name, "reason": text}] for every check that failed.
    failed_checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    enriched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The latest verdict of Claude as judge (models/judge.py): the overall score (1-5, the rubric's
    # weights), {criterion: {score, reason}}, the rubric and version, the model, what the judging
    # cost (every attempt and the repair). NULL until judged; every verdict is in ConversationVerdict.
    judge_score: Mapped[float | None] = mapped_column(Float)
    judge_scores: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    judge_rubric: Mapped[str | None] = mapped_column(String(100))
    judge_rubric_version: Mapped[int | None] = mapped_column(Integer)
    judge_model: Mapped[str | None] = mapped_column(String(100))
    judge_usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    judge_cost_usd: Mapped[float | None] = mapped_column(Numeric(16, 10, asdecimal=False))
    judged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class JudgeRubric(Base):
    """A version of a rubric file, as loaded into the catalog (devtools/rubrics/<name>.v<n>.json)."""

    __tablename__ = "judge_rubrics"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_judge_rubrics_name_version"),)
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()


class ConversationVerdict(Base):
    """Every verdict a conversation was given, one per rubric version: a rerun keeps the old ones."""

    __tablename__ = "conversation_verdicts"
    __table_args__ = (
        UniqueConstraint(
            "conversation_pk", "rubric_name", "rubric_version", name="uq_conversation_verdicts_conversation_pk"
        ),
    )
    id: Mapped[uuid.UUID] = _id()
    conversation_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    rubric_name: Mapped[str] = mapped_column(String(100))
    rubric_version: Mapped[int] = mapped_column(Integer)
    judge_model: Mapped[str] = mapped_column(String(100))
    overall: Mapped[float] = mapped_column(Float)
    criteria: Mapped[dict[str, Any]] = mapped_column(JSONB)
    usage: Mapped[dict[str, Any]] = mapped_column(JSONB)
    cost_usd: Mapped[float] = mapped_column(Numeric(16, 10, asdecimal=False))
    # The judge's raw reply that gave this verdict (the repair's, when there was one).
    raw_key: Mapped[str] = mapped_column(Text)
    judged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class Export(Base):
    """One export of a training set: who asked, what was selected, where it went, what it holds."""

    __tablename__ = "exports"
    __table_args__ = (_check_in("status", ExportStatus, "status"), _check_in("format", ExportFormat, "format"))
    id: Mapped[uuid.UUID] = _id()
    created_by: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20), server_default=ExportStatus.RUNNING.value)
    format: Mapped[str] = mapped_column(String(20))
    # Jobs, review status, minimum quality, split, seed, owner: enough to run it again.
    selection: Mapped[dict[str, Any]] = mapped_column()
    location: Mapped[str] = mapped_column(Text)
    conversation_count: Mapped[int] = mapped_column(Integer, server_default="0")
    split_counts: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BatchItem(Base):
    __tablename__ = "batch_items"
    __table_args__ = (
        _check_in("status", ItemStatus, "status"),
        _check_in("tier", Tier, "tier"),
        UniqueConstraint("batch_job_id", "position", name="uq_batch_items_batch_job_id_position"),
        Index("ix_batch_items_batch_job_id_status", "batch_job_id", "status", "position"),
    )
    id: Mapped[uuid.UUID] = _id()
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    topic: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(20))
    # persona_id, emotional_arc_id, training_topic_id, template_id (nil UUID = auto-select).
    parameters: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), server_default=ItemStatus.QUEUED.value)
    progress: Mapped[int] = mapped_column(Integer, server_default="0")
    estimated_time: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    # The ApplicationError type of the last failure (claude_400, template_not_found, ...).
    error_type: Mapped[str | None] = mapped_column(String(100))
    usage: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class BatchJobEvent(Base):
    """One line of a job's log: written in the same transaction as the change it records, and
    rendered to `batch-logs/{job_id}/log.txt` when the job pauses, ends or is cancelled."""

    __tablename__ = "batch_job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    batch_item_id: Mapped[uuid.UUID | None] = mapped_column()
    line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())

    @staticmethod
    def text_line(created_at: datetime, line: str) -> str:
        """The event as a line of log.txt, and of `starter.py log`."""
        return f"{created_at.isoformat(timespec='milliseconds')} {line}"

    @classmethod
    def of_job(cls, job_id: uuid.UUID) -> Select[datetime, str]:
        """The job's events, oldest first: when and what, as text_line takes them."""
        return select(cls.created_at, cls.line).where(cls.batch_job_id == job_id).order_by(cls.id)


class MessageBatch(Base):
    """One Anthropic Message Batch of a job. The row (and its id) exists before the API is asked,
    and the API's id is written as soon as it answers: a restart polls it instead of submitting
    again."""

    __tablename__ = "message_batches"
    __table_args__ = (_check_in("status", MessageBatchState, "status"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    anthropic_batch_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(20), server_default=MessageBatchState.SUBMITTING.value)
    request_count: Mapped[int] = mapped_column(Integer, server_default="0")
    # The API's request_counts once the batch ended (succeeded, errored, canceled, expired).
    request_counts: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    results_collected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when a retried submission took the batch from the API's listing (its create's answer was
    # lost): ours only once its results name our requests, so never cancelled before.
    adopted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set just before the create is sent, cleared when the API answers without a batch: set while
    # anthropic_batch_id is not, the create's outcome is unknown and a retry may adopt.
    create_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Adopted candidates whose results proved them another's.
    foreign_batch_ids: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    # The adoption was given up: the requests went back to waiting for a batch of their own.
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class MessageBatchRequest(Base):
    """One request staged for a Message Batch: its params are in storage (request_key), the
    reply goes where an online call's would (raw_key). `custom_id` names the item and its try."""

    __tablename__ = "message_batch_requests"
    __table_args__ = (
        _check_in("result_type", BatchResultType, "result_type"),
        Index("ix_message_batch_requests_waiting", "batch_job_id", "message_batch_id", "created_at"),
        Index("ix_message_batch_requests_batch_item_id", "batch_item_id"),
        Index("ix_message_batch_requests_message_batch_id", "message_batch_id"),
    )
    custom_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"))
    batch_item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_items.id", ondelete="CASCADE"))
    message_batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("message_batches.id", ondelete="SET NULL"))
    request_key: Mapped[str] = mapped_column(Text)
    raw_key: Mapped[str] = mapped_column(Text)
    request_bytes: Mapped[int] = mapped_column(Integer)
    # What the raw reply file records beside the message (template, max_tokens, repair_of).
    details: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    result_type: Mapped[str | None] = mapped_column(String(20))
    # The result as its item acts on it (a BatchResult), stored once the batch has ended, and when
    # it was announced to the item: results go out a step at a time.
    result: Mapped[dict[str, Any] | None] = mapped_column()
    announced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class ClaudeCallPacing(Base):
    """When the next Claude call of a task queue may start: every worker of the queue takes its
    turn from this row, so the queue's calls go out evenly at its calls per minute."""

    __tablename__ = "claude_call_pacing"
    task_queue: Mapped[str] = mapped_column(Text, primary_key=True)
    next_call_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(Base):
    """A person of the review workspace. `name` is the user id jobs and conversations are
    created by (`created_by`); the password is kept only as its Argon2id hash."""

    __tablename__ = "users"
    __table_args__ = (_check_in("role", UserRole, "role"),)
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class SignInThrottle(Base):
    """Bad passwords in a row for a name attempted (a user's or no one's), and until when sign-in
    with it is refused after too many. A row quiet for the throttle's length is forgotten."""

    __tablename__ = "sign_in_throttles"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    throttled_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class UserSession(Base):
    """A signed-in browser: the cookie holds a random token, the row only its SHA-256."""

    __tablename__ = "user_sessions"
    id: Mapped[uuid.UUID] = _id()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class ApiToken(Base):
    """A script's `Authorization: Bearer` token (`starter.py users token NAME`), stored as its SHA-256."""

    __tablename__ = "api_tokens"
    id: Mapped[uuid.UUID] = _id()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobShare(Base):
    """A job its owner shared with another user, who then sees it and reviews its conversations."""

    __tablename__ = "job_shares"
    batch_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True)
    user_name: Mapped[str] = mapped_column(
        String(200), ForeignKey("users.name", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = _created_at()


class ReviewDecision(Base):
    """Every review decision, from the workspace or the command line: who decided what, when and
    why. The conversation's row keeps only its current verdict; an undo is a decision too."""

    __tablename__ = "review_decisions"
    __table_args__ = (
        _check_in("decision", ReviewStatus, "decision"),
        Index("ix_review_decisions_decided_by_id", "decided_by", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(20))
    # The verdict it replaced: what an undo puts back.
    previous: Mapped[str] = mapped_column(String(20))
    # Set on an undo: the decision it took back.
    undoes: Mapped[int | None] = mapped_column(ForeignKey("review_decisions.id", ondelete="CASCADE"))
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(200))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
