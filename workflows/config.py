"""Timeouts, retry policies and message names of the workflows, in one place."""

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityConfig, LocalActivityConfig

from activities.errors import (
    CATALOG_ROW_MISSING,
    DATABASE_ERROR,
    INVALID_OUTPUT,
    ITEM_NOT_FOUND,
    JOB_NOT_FOUND,
    LOW_QUALITY,
    STORAGE_ERROR,
    TEMPLATE_NOT_FOUND,
    TRUNCATED_OUTPUT,
    UNKNOWN_PLACEHOLDER,
)
from models.enums import Tier
from models.messages import ClaudeCallPlan

# Patch id: a job starts its items' workflows through an activity, not as child workflows.
ITEMS_STARTED_BY_ACTIVITY = "items-started-by-activity"
# Patch id: a job continues as new without waiting for an enrichment page under way.
CONTINUE_WITHOUT_WAITING_FOR_ENRICHMENT = "continue-without-waiting-for-enrichment"
# Patch id: a job's last enrichment pages continue as new once its history is long (a lagging
# enrichment left 1,000 pages to the end of a 2,048-item job and its last run at 7,638 events).
CONTINUE_DURING_FINAL_ENRICHMENT = "continue-during-final-enrichment"
# Patch id: a job's workflow ends in the job's state: Failed (JOB_FAILED, the job's reason) for a
# failed job, Canceled for a cancelled one, also when the cancel came as a signal (before, both
# completed, their state only in the result and the search attributes).
JOB_ENDS_IN_ITS_STATE = "job-ends-in-its-state"

# The error type of a failed job's workflow (non-retryable; its details hold the JobProgress).
JOB_FAILED = "BatchJobFailed"

_PERMANENT_TYPES = [
    JOB_NOT_FOUND,
    ITEM_NOT_FOUND,
    CATALOG_ROW_MISSING,
    TEMPLATE_NOT_FOUND,
    UNKNOWN_PLACEHOLDER,
    INVALID_OUTPUT,
    TRUNCATED_OUTPUT,
    LOW_QUALITY,
    DATABASE_ERROR,
    STORAGE_ERROR,
]

# Database and storage steps: short, and retried without an attempt cap, so an outage of any
# length delays them and never fails them; a retry comes at most 30 s after the part is back.
# Refusals no retry can fix are non-retryable (activities/data_errors.py classifies them).
DATA_STEP = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=0,
        non_retryable_error_types=_PERMANENT_TYPES,
    ),
)

# An item's data steps try once as local activities, in the worker that runs the item: no task
# to dispatch, one event instead of three, no workflow task in between. A try that fails for a
# reason a retry may fix (an outage, a timeout) goes on as a DATA_STEP activity, whose attempts
# `status` and the web UI show while the part is down.
LOCAL_DATA_STEP = LocalActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=1),
)


def retry_cannot_help(error: ActivityError) -> bool:
    """A step's failure that DATA_STEP would not retry either."""
    cause = error.cause
    return isinstance(cause, ApplicationError) and (cause.non_retryable or cause.type in _PERMANENT_TYPES)


# Export steps read and write a page of conversations (or join them all): longer than a data step.
EXPORT_STEP: ActivityConfig = {**DATA_STEP, "start_to_close_timeout": timedelta(minutes=10)}


def item_priority(job_id: uuid.UUID, priority: int) -> Priority:
    """Task queue priority of a job's items and (inherited) their activities. Backlogs are served
    by priority first, then fairly across fairness keys: one per job, so a small job launched
    behind a big one gets its share at once instead of waiting for the big one's backlog."""
    return Priority(priority_key=priority or None, fairness_key=str(job_id))


def claude_step(plan: ClaudeCallPlan, tier: Tier, priority: Priority) -> ActivityConfig:
    """Options of one Claude call. The activity classifies its own failures (retry-after, backoff
    with jitter, non-retryable 4xx) and caps the requests it sends at `plan.max_attempts`,
    counted in its heartbeat before each goes (so a timeout or a lost worker counts too). The
    policy has no attempt cap: an attempt that waited for its rate-limit turn, for PostgreSQL or
    for an account refusal to be fixed sent nothing and must not end the item. Its intervals (the
    same backoff settings) apply to timeouts and lost workers. The heartbeat notices a lost worker
    within seconds; start-to-close is sized from the tier's max_tokens."""
    return _claude_call(plan, plan.attempt_timeout_s[tier], priority)


# Temporal's priority keys: 1 first, 5 last, unset the middle.
PRIORITY_DEFAULT, PRIORITY_LAST = 3, 5


def judge_step(plan: ClaudeCallPlan, priority: Priority) -> ActivityConfig:
    """Options of one judge call: a Claude call like a generation's (same queue, pacing and
    retries), sized from the judge's max_tokens, one priority step behind its item's generation
    calls, so that judging never holds up generating (it still takes its share of the queue's
    turns whenever no generation call is waiting)."""
    behind = Priority(
        priority_key=min(PRIORITY_LAST, (priority.priority_key or PRIORITY_DEFAULT) + 1),
        fairness_key=priority.fairness_key,
    )
    return _claude_call(plan, plan.judge_attempt_timeout_s, behind)


def _claude_call(plan: ClaudeCallPlan, attempt_timeout_s: float, priority: Priority) -> ActivityConfig:
    return ActivityConfig(
        task_queue=plan.task_queue,
        # Inherited from the item anyway; explicit so the call's scheduled event shows it.
        priority=priority,
        start_to_close_timeout=timedelta(seconds=attempt_timeout_s),
        heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout_s),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=plan.retry_base_s),
            maximum_interval=timedelta(seconds=plan.retry_cap_s),
            maximum_attempts=0,
            non_retryable_error_types=_PERMANENT_TYPES,
        ),
    )


# How long a halting job waits for its cancelled items to report before recording them itself.
ITEM_CANCEL_GRACE = timedelta(minutes=2)


# Message Batches endpoints: an API outage delays the batch, never fails it. They heartbeat, so
# a lost worker's attempt is retried within the heartbeat timeout (a submission then finds or
# adopts the batch it created; a results stream resumes after the last chunk it stored).
MESSAGE_BATCH_STEP = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=10),
    heartbeat_timeout=timedelta(seconds=20),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1)),
)
MESSAGE_BATCH_RESULTS_STEP: ActivityConfig = {**MESSAGE_BATCH_STEP, "start_to_close_timeout": timedelta(hours=1)}
# An item waiting for its Message Batch result asks after it this long after staging it, then
# twice as long each time up to the cap: a result whose announcement was lost, or a Message
# Batches workflow that ended (terminated, failed) without bringing it, is noticed in hours, not
# never, for a few checks in a batch's 24 h.
BATCH_RESULT_FIRST_CHECK = timedelta(hours=1)
BATCH_RESULT_CHECK_CAP = timedelta(hours=8)


def history_is_long(history_event_limit: int) -> bool:
    """Time for a workflow to continue as new: a fifth of the limit is left for what still
    arrives before the new run takes over (reports and requests signalled meanwhile, the
    events of the step that is running), so no run passes the limit."""
    info = workflow.info()
    return info.get_current_history_length() >= history_event_limit * 4 // 5 or info.is_continue_as_new_suggested()
