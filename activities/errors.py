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
ITEM_ALREADY_LINKED = "ItemAlreadyLinked"


def permanent(message: str, error_type: str, *details: object) -> ApplicationError:
    """A failure that no retry can fix: the message reaches the item row as it is; details are
    for the workflow that handles it."""
    return ApplicationError(message, *details, type=error_type, non_retryable=True)
