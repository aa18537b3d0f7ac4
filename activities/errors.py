"""Failure types an activity raises on purpose. The type is for programs, the message for people."""

from temporalio.exceptions import ApplicationError

JOB_NOT_FOUND = "JobNotFound"
ITEM_NOT_FOUND = "ItemNotFound"
CATALOG_ROW_MISSING = "CatalogRowMissing"
TEMPLATE_NOT_FOUND = "TemplateNotFound"
UNKNOWN_PLACEHOLDER = "UnknownPlaceholder"
INVALID_OUTPUT = "invalid_output"
TRUNCATED_OUTPUT = "truncated_output"
LOW_QUALITY = "low_quality"
EXPORT_FILE_MISSING = "ExportFileMissing"
ITEM_ALREADY_LINKED = "ItemAlreadyLinked"
# Database and storage failures, classified in activities/data_errors.py. An outage is retried
# until the part is back; a refusal (constraint, bad value, missing bucket, access denied) never is.
DATABASE_UNAVAILABLE = "database_unavailable"
STORAGE_UNAVAILABLE = "storage_unavailable"
DATABASE_ERROR = "database_error"
STORAGE_ERROR = "storage_error"
# The part each outage type waits for, as a person names it.
OUTAGE_PARTS = {DATABASE_UNAVAILABLE: "PostgreSQL", STORAGE_UNAVAILABLE: "S3 storage"}
# A Claude call that would wait for the rate limit past its attempt's deadline: retried after it.
CLAUDE_RATE_LIMIT_WAIT = "claude_rate_limit_wait"


def permanent(message: str, error_type: str, *details: object) -> ApplicationError:
    """A failure that no retry can fix: the message reaches the item row as it is; details are
    for the workflow that handles it."""
    return ApplicationError(message, *details, type=error_type, non_retryable=True)
