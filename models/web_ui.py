"""Links between a job's workflow and its items' in the Temporal web UI, for their user metadata
(static details, rendered as markdown on the workflow's page). Items are started by an activity,
not as child workflows, so the UI's Relationships tab shows none: these links take their place.
They are paths on the UI's own origin (the details render in a frame of the UI's page), so they
hold no host, port or secret and stay right wherever the UI is served."""

from __future__ import annotations

from urllib.parse import quote

from models.workflow_ids import job_workflow_id

ITEM_WORKFLOW_TYPE = "BatchItemWorkflow"
JOB_WORKFLOW_TYPE = "BatchJobWorkflow"


# The jobs view (docs/web-ui.md): job workflows only, the runs a job continued as new left out
# (each shows the progress of its time), so each job is one row (a retried job: one per run).
JOBS_QUERY = f'WorkflowType="{JOB_WORKFLOW_TYPE}" AND ExecutionStatus!="ContinuedAsNew"'
# The columns the jobs view adds to the UI's list ("Configure Columns"), from models/search_attributes.py.
JOBS_VIEW_COLUMNS = ("BatchJobName", "BatchProgress", "BatchPercentDone", "BatchStatus")


def jobs_view_path(namespace: str) -> str:
    return list_path(namespace, JOBS_QUERY)


def workflow_path(namespace: str, workflow_id: str) -> str:
    return f"/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"


def list_path(namespace: str, query: str) -> str:
    """The workflow list filtered by a visibility query."""
    return f"/namespaces/{quote(namespace, safe='')}/workflows?query={quote(query, safe='')}"


def job_items_query(job_id: object, status: str | None = None) -> str:
    query = f'BatchJobId="{job_id}" AND WorkflowType="{ITEM_WORKFLOW_TYPE}"'
    return f'{query} AND ExecutionStatus="{status}"' if status else query


def job_details(namespace: str, job_id: object) -> str:
    """A job's static details: its items, its failed items, every workflow of the job."""
    every_workflow = f'BatchJobId="{job_id}"'
    return (
        f"Job `{job_id}`: [its items]({list_path(namespace, job_items_query(job_id))}) · "
        f"[failed items]({list_path(namespace, job_items_query(job_id, 'Failed'))}) · "
        f"[all its workflows]({list_path(namespace, every_workflow)})"
    )


def item_details(namespace: str, job_id: object) -> str:
    """An item's static details: back to its job, and its sibling items."""
    return (
        f"Item of job [{job_workflow_id(job_id)}]({workflow_path(namespace, job_workflow_id(job_id))}) · "
        f"[the job's items]({list_path(namespace, job_items_query(job_id))})"
    )
