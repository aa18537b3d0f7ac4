"""What a running job waits for: the steps of its workflow, of its Message Batches workflow and
of its in-flight item workflows whose last attempt failed because PostgreSQL or S3 was
unavailable (activities/data_errors.py types those failures) or because Anthropic refused the
account (anthropic_refused: a key, permission, billing or spend limit the operator must fix).
Read from Temporal alone, so it works while the database is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, computed_field
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.errors import ANTHROPIC_REFUSED, OUTAGE_PARTS
from activities.item_workflows import ITEM_WORKFLOW_TYPE
from models.workflow_ids import job_workflow_id, message_batches_workflow_id

# In-flight items are at most the job's concurrency (100 at most): one describe each, at once.
MAX_DESCRIBED_ITEMS = 100
# What each failure type waits for, as a person names it.
WAITING_PARTS = {**OUTAGE_PARTS, ANTHROPIC_REFUSED: "Anthropic"}


class Outage(BaseModel):
    """One part a job waits for (`status` shows it, and `status --json` prints its fields)."""

    part: str  # "PostgreSQL", "S3 storage" or "Anthropic"
    error_type: str
    since: datetime | None  # when the longest-waiting step was first scheduled (or refused)
    items: int  # in-flight items with a step waiting for the part
    job_steps: list[str]  # the steps of the job's workflows (job, Message Batches) waiting for it
    last_error: str  # for a refusal, what Anthropic said

    @computed_field  # type: ignore[prop-decorator]  # mypy does not know decorated properties
    @property
    def summary(self) -> str:
        """e.g. "waiting for PostgreSQL since 02:03 (3 items; job step set_job_status): ...", or
        "Anthropic refused: invalid x-api-key (401 authentication_error) since 02:03 (3 items)"."""
        since = f" since {self.since.astimezone():%H:%M}" if self.since else ""
        waiting = [f"{self.items} item{'s' if self.items != 1 else ''}"] if self.items else []
        if self.job_steps:
            waiting.append(f"job step {', '.join(self.job_steps)}")
        if self.error_type == ANTHROPIC_REFUSED:
            return f"Anthropic refused: {self.last_error}{since} ({'; '.join(waiting)})"
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
    job_steps, batch_steps, *item_steps = await asyncio.gather(
        _waiting_steps(client, workflow_id),
        _waiting_steps(client, message_batches_workflow_id(job_id)),
        *(_waiting_steps(client, item_id) for item_id in running_items),
    )
    job_steps += batch_steps
    outages = []
    for error_type, part in WAITING_PARTS.items():
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
        if isinstance(failure, ApplicationError) and failure.type in WAITING_PARTS:
            steps.append(
                _WaitingStep(
                    error_type=failure.type,
                    activity=pending.activity_type.name,
                    since=_since(failure, pending),
                    message=_refusal_reason(failure) if failure.type == ANTHROPIC_REFUSED else failure.message,
                )
            )
    return steps


def _refusal_reason(failure: ApplicationError) -> str:
    """What Anthropic said, from the refusal's details (models.messages.RefusalDetails); else
    the failure's message."""
    details = failure.details[0] if failure.details else None
    if isinstance(details, dict) and details.get("reason"):
        return str(details["reason"])
    return failure.message


def _since(failure: ApplicationError, pending: PendingActivityInfo) -> datetime | None:
    """The first attempt's schedule time the failing activity put in its details; else the
    last attempt's start."""
    details = failure.details[0] if failure.details else None
    if isinstance(details, dict) and details.get("since"):
        return datetime.fromisoformat(details["since"])
    return pending.last_started_time.ToDatetime(tzinfo=UTC) if pending.HasField("last_started_time") else None
