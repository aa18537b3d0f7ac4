"""Custom search attributes of the batch workflows, so the web UI can filter and show progress.
The web UI shows them as columns of its workflow list (docs/web-ui.md); each is registered by
devtools/devstack.py (dev server), docker-compose.yml and the tests' time-skipping server."""

from temporalio.common import SearchAttributeKey

# The job's id, on the job's workflow and every item's: `BatchJobId="..."` lists a job's workflows.
BATCH_JOB_ID = SearchAttributeKey.for_keyword("BatchJobId")
# The job's name (`launch --name`), set when its workflow starts.
BATCH_JOB_NAME = SearchAttributeKey.for_keyword("BatchJobName")
BATCH_STATUS = SearchAttributeKey.for_keyword("BatchStatus")
BATCH_PERCENT_DONE = SearchAttributeKey.for_int("BatchPercentDone")
# "done/total" items (done: completed or cancelled), upserted with BatchPercentDone: on each
# whole percent, at most ~100 times a job however many items it has.
BATCH_PROGRESS = SearchAttributeKey.for_keyword("BatchProgress")

ALL = (BATCH_JOB_ID, BATCH_JOB_NAME, BATCH_STATUS, BATCH_PERCENT_DONE, BATCH_PROGRESS)
