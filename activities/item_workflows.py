"""What Temporal knows of item workflows. A job asks which of its in-flight items ended without
reporting (terminated from the web UI, timed out, failed before their report), so that each is
accounted once from its row instead of being waited for forever."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from models.messages import EndedWorkflows, WorkflowIds


class WorkflowActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="ended_workflows")
    async def ended_workflows(self, request: WorkflowIds) -> EndedWorkflows:
        states = await asyncio.gather(*(self._state_of(workflow_id) for workflow_id in request.workflow_ids))
        return EndedWorkflows(
            ended={workflow_id: state for workflow_id, state in zip(request.workflow_ids, states, strict=True) if state is not None}
        )

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
