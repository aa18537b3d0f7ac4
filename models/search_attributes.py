"""Custom search attributes of the batch workflow, so the web UI can filter and show progress."""

from temporalio.common import SearchAttributeKey

BATCH_JOB_ID = SearchAttributeKey.for_keyword("BatchJobId")
BATCH_STATUS = SearchAttributeKey.for_keyword("BatchStatus")
BATCH_PERCENT_DONE = SearchAttributeKey.for_int("BatchPercentDone")

ALL = (BATCH_JOB_ID, BATCH_STATUS, BATCH_PERCENT_DONE)
