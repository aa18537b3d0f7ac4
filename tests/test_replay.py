"""Replay saved histories: a workflow change that breaks determinism fails here, not in production.

The histories are recorded by `python -m tests.record_histories`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.export import ExportWorkflow
from workflows.message_batches import MessageBatchesWorkflow

HISTORIES = Path(__file__).parent / "histories"
# Every saved history: today's at the top (a job, one that failed, one cancelled by its signal,
# items completed, repaired and failed, items judged, one after repairing its verdict, an export;
# a batch-mode job, its Message Batches workflow, an item whose repair went into the next batch
# and one whose expired request was sent again), and in a folder named for each change made
# under a patch, the histories it replaced: runs under way at a change must still replay.
SAVED = sorted(str(path.relative_to(HISTORIES)) for path in HISTORIES.rglob("*.json"))


@pytest.mark.parametrize("filename", SAVED)
async def test_saved_history_replays_without_nondeterminism(filename: str) -> None:
    history = WorkflowHistory.from_json(filename.removesuffix(".json"), (HISTORIES / filename).read_text())
    replayer = Replayer(
        workflows=[BatchJobWorkflow, BatchItemWorkflow, ExportWorkflow, MessageBatchesWorkflow],
        data_converter=pydantic_data_converter,
    )

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{filename} no longer replays: {result.replay_failure}"
