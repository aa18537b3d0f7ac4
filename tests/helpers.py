"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from brightrun.settings import Settings
from models.messages import CallProgress
from models.workflow_ids import item_workflow_id
from service import batches
from service.job_outcome import job_outcome


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll a condition until it holds (never a fixed sleep in place of the condition)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await _holds(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def _holds(condition: Callable[[], object]) -> bool:
    result = condition()
    if not asyncio.iscoroutine(result):
        return bool(result)
    try:
        return bool(await result)
    except RPCError as error:
        # A query waits for the workflow task in flight; one held by a worker that stopped is
        # handed on only when it times out (10 s), after the query's own deadline (the server's,
        # or the client's "Timeout expired"): not yet.
        if error.status != RPCStatusCode.DEADLINE_EXCEEDED and error.message != "Timeout expired":
            raise
        return False


async def histories_quoting(client: Client, item_ids: list[uuid.UUID], text: str) -> list[str]:
    """The item workflows whose history holds this text anywhere (an input, a result, a signal)."""
    quoting = []
    for item_id in item_ids:
        history = await client.get_workflow_handle(item_workflow_id(item_id)).fetch_history()
        if any(text.encode() in event.SerializeToString() for event in history.events):
            quoting.append(item_workflow_id(item_id))
    return quoting


async def launch_and_wait(
    sessions: async_sessionmaker, client: Client, settings: Settings, **request: Any
) -> batches.LaunchedJob:
    job = await batches.launch(sessions, client, settings, batches.LaunchRequest(**request))
    await job_outcome(client.get_workflow_handle(job.workflow_id))
    return job


async def reset_to_first_workflow_task(client: Client, workflow_id: str) -> str:
    """Reset a workflow's current run as an operator does from the web UI ("reset to the first
    workflow task"); returns the new run's id."""
    handle = client.get_workflow_handle(workflow_id)
    run_id = (await handle.describe()).run_id
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    first_task = next(e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            reason="test: reset to the first workflow task",
            workflow_task_finish_event_id=first_task,
            request_id=str(uuid.uuid4()),
        )
    )
    return reset.run_id


async def claude_call_progress(client: Client, item_id: uuid.UUID) -> CallProgress | None:
    """The heartbeat details of the item's running Claude call, if it runs and has heartbeated."""
    try:
        description = await client.get_workflow_handle(item_workflow_id(item_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the job has not started the item yet
            return None
        raise
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "generate_conversation" and pending.heartbeat_details.payloads:
            details = await client.data_converter.decode(pending.heartbeat_details.payloads)
            return CallProgress.model_validate(details[0])
    return None


def step_tries(history: WorkflowHistory, step: str) -> list[str]:
    """How an item's step ran, in order: "local" for each local try (its marker), "attempt N" for
    the step as an activity (the server writes its started event once, with the attempt that
    ended it)."""
    tries = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and marker.marker_name == "core_local_activity":
            if json.loads(marker.details["data"].payloads[0].data)["activity_type"] == step:
                tries.append("local")
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            scheduled = next(e for e in history.events if e.event_id == started.scheduled_event_id)
            if scheduled.activity_task_scheduled_event_attributes.activity_type.name == step:
                tries.append(f"attempt {started.attempt}")
    return tries


async def run_lengths(client: Client, workflow_id: str) -> list[int]:
    """Events of each run of a workflow, following the chain back from the latest run."""
    lengths: list[int] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.insert(0, len(history.events))
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            return lengths
