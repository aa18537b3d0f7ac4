"""Statuses and choices shared by the code and the migrations, so the two cannot drift."""

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class ItemStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (ItemStatus.COMPLETED, ItemStatus.FAILED, ItemStatus.CANCELLED)


class Tier(StrEnum):
    TEMPLATE = "template"
    SCENARIO = "scenario"
    EDGE_CASE = "edge_case"


class ErrorPolicy(StrEnum):
    """What a job does when an item fails for good."""

    CONTINUE = "continue"
    STOP = "stop"


class DeliveryMode(StrEnum):
    """How a job's Claude calls go out: one online Messages call per item, or Anthropic's Message
    Batches (half the price, results within 24 hours)."""

    ONLINE = "online"
    BATCH = "batch"


class MessageBatchState(StrEnum):
    """`message_batches.status`: ours before the API knows the batch, then Anthropic's own."""

    SUBMITTING = "submitting"
    IN_PROGRESS = "in_progress"
    CANCELING = "canceling"
    ENDED = "ended"


class ClaudeProvider(StrEnum):
    """Who wrote a conversation: Anthropic's API, or the offline stand-in (placeholder text,
    never training data). The raw reply files say it as `generated_by`."""

    ANTHROPIC = "anthropic"
    OFFLINE_STANDIN = "offline-standin"


class BatchResultType(StrEnum):
    """The result of one request of a Message Batch, as the API reports it."""

    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    CANCELED = "canceled"
    EXPIRED = "expired"


class ProcessingStatus(StrEnum):
    """`conversations.processing_status`: where a generated conversation is in its life."""

    GENERATED = "generated"
    APPROVED = "approved"
    REJECTED = "rejected"


class ReviewStatus(StrEnum):
    """`conversations.review_status`: a person's (or a bulk rule's) verdict on a conversation."""

    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"


class UserRole(StrEnum):
    """`users.role`: a reviewer sees their own jobs and the jobs shared with them; an admin sees everything."""

    REVIEWER = "reviewer"
    ADMIN = "admin"


class ExportFormat(StrEnum):
    """How an exported record holds its turns: OpenAI/TRL chat `messages`, or ShareGPT `conversations`."""

    MESSAGES = "messages"
    SHAREGPT = "sharegpt"


class ExportStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


def sql_in_list(enum: type[StrEnum]) -> str:
    """The `IN (...)` list of a CHECK constraint, built from the enum itself."""
    return ", ".join(f"'{member.value}'" for member in enum)
