"""Timeouts, retry policies and message names of the workflows, in one place."""

from datetime import timedelta

from temporalio.common import RetryPolicy

from activities.errors import (
    CATALOG_ROW_MISSING,
    INVALID_OUTPUT,
    ITEM_NOT_FOUND,
    LOW_QUALITY,
    JOB_NOT_FOUND,
    TEMPLATE_NOT_FOUND,
    TRUNCATED_OUTPUT,
    UNKNOWN_PLACEHOLDER,
)

ITEM_FINISHED_SIGNAL = "item_finished"

_PERMANENT_TYPES = [
    JOB_NOT_FOUND,
    ITEM_NOT_FOUND,
    CATALOG_ROW_MISSING,
    TEMPLATE_NOT_FOUND,
    UNKNOWN_PLACEHOLDER,
    INVALID_OUTPUT,
    TRUNCATED_OUTPUT,
    LOW_QUALITY,
]

# Database and storage steps: short, retried with backoff through a database or S3 outage.
DATA_STEP = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=20,
        non_retryable_error_types=_PERMANENT_TYPES,
    ),
}

# The Claude call classifies its own failures (retry-after, backoff with jitter, an attempt cap
# from the worker's settings); this policy is the backstop for timeouts and lost workers.
CLAUDE_STEP = {
    # A backstop above the SDK's own timeout (sized from max_tokens); the heartbeat notices a
    # lost worker within seconds.
    "start_to_close_timeout": timedelta(minutes=15),
    "heartbeat_timeout": timedelta(seconds=20),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=20,
        non_retryable_error_types=_PERMANENT_TYPES,
    ),
}

# How long a halting job waits for its cancelled items to report before recording them itself.
ITEM_CANCEL_GRACE = timedelta(minutes=2)
