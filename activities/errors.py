"""Every failure type the engine raises on purpose, in one casing (snake_case, as Anthropic's own
error types are spelled). The type is for programs (retry policies, workflows, `status`), the
message for people."""

from temporalio.exceptions import ApplicationError

# Rows a step needs that are not there (anymore).
JOB_NOT_FOUND = "job_not_found"
ITEM_NOT_FOUND = "item_not_found"
CATALOG_ROW_MISSING = "catalog_row_missing"
TEMPLATE_NOT_FOUND = "template_not_found"
UNKNOWN_PLACEHOLDER = "unknown_placeholder"
EXPORT_FILE_MISSING = "export_file_missing"
# An export took a conversation the offline stand-in wrote, without --allow-stand-in.
EXPORT_STAND_IN_REFUSED = "export_stand_in_refused"
# An export's --out already holds something (another export's parts, say): nothing is written.
EXPORT_DESTINATION_NOT_EMPTY = "export_destination_not_empty"
ITEM_ALREADY_LINKED = "item_already_linked"
# Claude's reply cannot become a conversation.
INVALID_OUTPUT = "invalid_output"
TRUNCATED_OUTPUT = "truncated_output"
LOW_QUALITY = "low_quality"
# Claude declined to write the conversation (stop_reason `refusal`), or prompt and reply outgrew
# the model's context window (`model_context_window_exceeded`): asking again the same way would
# end the same way, so neither gets a repair turn.
CLAUDE_REFUSAL = "claude_refusal"
CLAUDE_CONTEXT_WINDOW_EXCEEDED = "claude_context_window_exceeded"
# Claude as judge (activities/judge.py): the judge's reply is no valid verdict (repaired once);
# the job's rubric is not in the catalog; the conversation to judge has no stored file.
INVALID_VERDICT = "invalid_verdict"
RUBRIC_NOT_FOUND = "rubric_not_found"
CONVERSATION_NOT_FOUND = "conversation_not_found"
# Database and storage failures, classified in activities/data_errors.py. An outage is retried
# until the part is back; a refusal (constraint, bad value, missing bucket, access denied) never is.
DATABASE_UNAVAILABLE = "database_unavailable"
STORAGE_UNAVAILABLE = "storage_unavailable"
DATABASE_ERROR = "database_error"
STORAGE_ERROR = "storage_error"
# The part each outage type waits for, as a person names it.
OUTAGE_PARTS = {DATABASE_UNAVAILABLE: "PostgreSQL", STORAGE_UNAVAILABLE: "S3 storage"}
# Claude calls (activities/claude.py): the connection broke; a call that would wait for the rate
# limit past its attempt's deadline (retried after it); an HTTP error, see claude_http_error.
CLAUDE_CONNECTION = "claude_connection"
# The call failed for a reason nobody classified (a bug, a corrupt stored prompt): retried up to
# CLAUDE_MAX_ATTEMPTS times like a request, then the item fails with it.
CLAUDE_UNEXPECTED_ERROR = "claude_unexpected_error"
CLAUDE_RATE_LIMIT_WAIT = "claude_rate_limit_wait"
# Anthropic refuses the account, not the request: authentication, permission, billing, a spend
# limit. The operator's problem: the step waits (retried without an attempt cap, shown by `status`
# like an outage) and goes on once the key or limit is fixed; no item fails for it.
ANTHROPIC_REFUSED = "anthropic_refused"
# A request of a Message Batch the API refused, in the API's own spelling: never retried.
ANTHROPIC_INVALID_REQUEST = "invalid_request_error"
# An item's failure that is not an ApplicationError of a step: the step timed out, or failed with
# no type; its workflow ended without reporting; its Message Batch requests ran out of attempts,
# or the job's Message Batches workflow ended before the result came.
STEP_TIMED_OUT = "step_timed_out"
STEP_FAILED = "step_failed"
ITEM_UNREPORTED = "item_unreported"
BATCH_REQUEST_ATTEMPTS_EXHAUSTED = "batch_request_attempts_exhausted"
MESSAGE_BATCHES_ENDED = "message_batches_ended"
# The failure of a workflow: an item that failed, an export that failed.
ITEM_FAILED = "item_failed"
EXPORT_FAILED = "export_failed"


def claude_http_error(status: int) -> str:
    """The type of a Claude API error by its HTTP status: claude_400, claude_429, claude_529..."""
    return f"claude_{status}"


def permanent(message: str, error_type: str, *details: object) -> ApplicationError:
    """A failure that no retry can fix: the message reaches the item row as it is; details are
    for the workflow that handles it."""
    return ApplicationError(message, *details, type=error_type, non_retryable=True)
