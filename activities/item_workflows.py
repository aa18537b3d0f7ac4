"""Item workflows as Temporal knows them. A job starts its items' workflows here, many at once
(a child start passes through the job's own history one at a time, which capped the items a
job could start at about two a second), and asks which of its in-flight items ended without
reporting (terminated from the web UI, timed out, failed before their report), so that each is
accounted once from its row instead of being waited for forever."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import Priority, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from models import search_attributes
from models.messages import BatchItemInput, EndedWorkflows, ItemWorkflowStarts, StartedItemWorkflows, WorkflowIds
from models.web_ui import ITEM_WORKFLOW_TYPE, item_details
from models.workflow_ids import item_workflow_id

__all__ = ["ITEM_WORKFLOW_TYPE", "WorkflowActivities"]


class WorkflowActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="start_item_workflows")
    async def start_item_workflows(self, request: ItemWorkflowStarts) -> StartedItemWorkflows:
        """Starts every item's workflow; a retried attempt finds those it started already existing."""
        priority = Priority(priority_key=request.priority_key, fairness_key=request.fairness_key)
        started = await asyncio.gather(
            *(self._start(request.task_queue, priority, item, summary) for item, summary in zip(request.items, request.summaries, strict=True))
        )
        return StartedItemWorkflows(existing=[item.item_id for item, new in zip(request.items, started, strict=True) if not new])

    async def _start(self, task_queue: str, priority: Priority, item: BatchItemInput, summary: str) -> bool:
        try:
            await self._client.start_workflow(
                ITEM_WORKFLOW_TYPE,
                item,
                id=item_workflow_id(item.item_id),
                task_queue=task_queue,
                static_summary=summary or None,
                # Links back to the job's page and its items (the Relationships tab shows none).
                static_details=item_details(self._client.namespace, item.job_id),
                priority=priority,
                # The job's items, found by the job's id (the web UI's filter, the outage status).
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(search_attributes.BATCH_JOB_ID, str(item.job_id))]
                ),
                # An item that ended well is never started again; a failed one can be retried.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

    @activity.defn(name="ended_workflows")
    async def ended_workflows(self, request: WorkflowIds) -> EndedWorkflows:
        states = await asyncio.gather(*(self._state_of(workflow_id) for workflow_id in request.workflow_ids))
        return EndedWorkflows(
            ended={workflow_id: state for workflow_id, state in zip(request.workflow_ids, states, strict=True) if state is not None}
        )

    @activity.defn(name="request_cancellation")
    async def request_cancellation(self, request: WorkflowIds) -> None:
        """Ask Temporal to cancel these workflows (ids, or "id/run_id" for one run). A job
        cancelled by its signal asks this for its own run, so its execution ends Canceled like
        one cancelled from the web UI: a workflow cannot request its own cancellation, and the
        SDK ends an execution Canceled only after such a request."""
        await asyncio.gather(*(self._request_cancellation(workflow_id) for workflow_id in request.workflow_ids))

    async def _request_cancellation(self, target: str) -> None:
        workflow_id, _, run_id = target.partition("/")
        try:
            await self._client.get_workflow_handle(workflow_id, run_id=run_id or None).cancel()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            activity.logger.info("%s has ended; nothing to cancel", target)

    async def _state_of(self, workflow_id: str) -> str | None:
        """How the latest run ended; None while it runs (a reset run counts as running)."""
        try:
            description = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return "not found"
        if description.status in (None, WorkflowExecutionStatus.RUNNING):
            return None
        return description.status.name.lower()
