"""What a running job waits for: the steps of its workflow and of its in-flight item workflows
whose last attempt failed because PostgreSQL or S3 was unavailable (activities/data_errors.py
types those failures). Read from Temporal alone, so it works while the database is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, computed_field
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.errors import OUTAGE_PARTS
from activities.item_workflows import ITEM_WORKFLOW_TYPE
from models.workflow_ids import job_workflow_id

# In-flight items are at most the job's concurrency (100 at most): one describe each, at once.
MAX_DESCRIBED_ITEMS = 100


class Outage(BaseModel):
    """One part a job waits for (`status` shows it, and `status --json` prints its fields)."""

    part: str  # "PostgreSQL" or "S3 storage"
    error_type: str
    since: datetime | None  # when the longest-waiting step was first scheduled
    items: int  # in-flight items with a step waiting for the part
    job_steps: list[str]  # the job workflow's own steps waiting for it
    last_error: str

    @computed_field  # type: ignore[prop-decorator]  # mypy does not know decorated properties
    @property
    def summary(self) -> str:
        """e.g. "waiting for PostgreSQL since 02:03 (3 items; job step set_job_status)"."""
        since = f" since {self.since.astimezone():%H:%M}" if self.since else ""
        waiting = [f"{self.items} item{'s' if self.items != 1 else ''}"] if self.items else []
        if self.job_steps:
            waiting.append(f"job step {', '.join(self.job_steps)}")
        return f"waiting for {self.part}{since} ({'; '.join(waiting)}): {self.last_error}"


class _WaitingStep(BaseModel):
    error_type: str
    activity: str
    since: datetime | None
    message: str


async def job_outages(client: Client, job_id: object) -> list[Outage]:
    """The parts the job's running workflow and its items wait for; empty when none (or when the
    workflow does not run)."""
    workflow_id = job_workflow_id(job_id)
    # Items the job started by activity carry its id; those of runs before that are its children.
    items_of_job = f'(BatchJobId = "{job_id}" AND WorkflowType = "{ITEM_WORKFLOW_TYPE}") OR ParentWorkflowId = "{workflow_id}"'
    try:
        running_items = [
            execution.id
            async for execution in client.list_workflows(
                f'({items_of_job}) AND ExecutionStatus = "Running"', limit=MAX_DESCRIBED_ITEMS
            )
        ]
    except RPCError:  # a server whose visibility cannot filter by parent: the job's own steps only
        running_items = []
    job_steps, *item_steps = await asyncio.gather(
        _waiting_steps(client, workflow_id), *(_waiting_steps(client, item_id) for item_id in running_items)
    )
    outages = []
    for error_type, part in OUTAGE_PARTS.items():
        mine = [step for step in job_steps if step.error_type == error_type]
        items = [steps for steps in item_steps if any(step.error_type == error_type for step in steps)]
        waiting = mine + [step for steps in items for step in steps if step.error_type == error_type]
        if not waiting:
            continue
        outages.append(
            Outage(
                part=part,
                error_type=error_type,
                since=min((step.since for step in waiting if step.since), default=None),
                items=len(items),
                job_steps=sorted({step.activity for step in mine}),
                last_error=waiting[0].message,
            )
        )
    return outages


async def _waiting_steps(client: Client, workflow_id: str) -> list[_WaitingStep]:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:  # it ended meanwhile
        return []
    steps = []
    for pending in description.raw_description.pending_activities:
        if not pending.HasField("last_failure"):
            continue
        failure = await client.data_converter.decode_failure(pending.last_failure)
        if isinstance(failure, ApplicationError) and failure.type in OUTAGE_PARTS:
            steps.append(
                _WaitingStep(
                    error_type=failure.type,
                    activity=pending.activity_type.name,
                    since=_since(failure, pending),
                    message=failure.message,
                )
            )
    return steps


def _since(failure: ApplicationError, pending: PendingActivityInfo) -> datetime | None:
    """The first attempt's schedule time the failing activity put in its details; else the
    last attempt's start."""
    details = failure.details[0] if failure.details else None
    if isinstance(details, dict) and details.get("since"):
        return datetime.fromisoformat(details["since"])
    return pending.last_started_time.ToDatetime(tzinfo=UTC) if pending.HasField("last_started_time") else None
