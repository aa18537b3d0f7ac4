"""How a job's workflow ended, as the JobProgress every caller reads. The execution ends in the
job's state (workflows/batch_job.py): Completed with the progress as its result, Failed with an
ApplicationError of type JOB_FAILED whose details hold the progress, Canceled (no details: the
closed run answers the progress query, which takes a worker)."""

from __future__ import annotations

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from models.messages import JobProgress
from workflows.batch_job import BatchJobWorkflow
from workflows.config import JOB_FAILED


async def job_outcome(handle: WorkflowHandle) -> JobProgress:
    """Waits for the job's workflow to end; its progress whether it completed, failed or was
    cancelled. Any other end (terminated, timed out, failed otherwise) raises WorkflowFailureError."""
    try:
        result = await handle.result()
    except WorkflowFailureError as error:
        progress = await ended_progress(handle, error)
        if progress is None:
            raise
        return progress
    return result if isinstance(result, JobProgress) else JobProgress.model_validate(result)


async def ended_progress(handle: WorkflowHandle, error: WorkflowFailureError) -> JobProgress | None:
    """The progress of a job whose workflow ended Failed or Canceled; None for any other failure."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == JOB_FAILED and cause.details:
        details = cause.details[0]
        return details if isinstance(details, JobProgress) else JobProgress.model_validate(details)
    if isinstance(cause, CancelledError):
        return await handle.query(BatchJobWorkflow.progress)
    return None
