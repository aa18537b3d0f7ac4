"""How a workflow reads an activity's failure: the reason a person should read, what a failed
Claude call was paid for, and what to tell the model in a repair. Shared by the item's steps,
the judge's and an export's."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from activities.errors import STEP_FAILED, STEP_TIMED_OUT
from models.messages import CallProgress, TokenUsage


def failure_message(error: ActivityError) -> str:
    """The real reason an activity failed, as a person should read it on the item row."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    if isinstance(cause, TimeoutError) and cause.type is not None:
        return f"{error.activity_type} timed out ({cause.type.name.lower().replace('_', '-')})"
    return f"{error.activity_type} failed: {cause or error}"


def failure_type(error: ActivityError) -> str:
    """The kind of an activity's failure, as `status` counts failures: its ApplicationError's type."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return cause.type
    return STEP_TIMED_OUT if isinstance(cause, TimeoutError) else STEP_FAILED


def spent_on_failed_call(error: ActivityError) -> TokenUsage:
    """What the attempts of a Claude call that failed for good were paid for: the usage the
    activity put last in its failure's details, or for a timeout the one its last heartbeat carried."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[-1], dict):
        return TokenUsage.model_validate(cause.details[-1])
    if isinstance(cause, TimeoutError) and cause.last_heartbeat_details and isinstance(cause.last_heartbeat_details[0], dict):
        return CallProgress.model_validate(cause.last_heartbeat_details[0]).usage
    return TokenUsage()


def repair_problem(error: ApplicationError) -> str:
    """What to tell the model about its rejected reply: the validation problem the activity put in
    the error's details (without the storage path its message adds for people)."""
    return str(error.details[0]) if error.details else error.message


