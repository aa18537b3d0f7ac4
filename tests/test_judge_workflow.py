"""The judge step in the item and job workflows, on the time-skipping server with the data steps
and Claude calls in memory (tests/fakes.py): the job counts what was judged, an invalid verdict
is repaired once, a failed item is not judged."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from models.messages import BatchJobInput, JudgePlan
from models.workflow_ids import job_workflow_id
from tests.fakes import FakeActivities, FakeBatch
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow


async def test_a_judged_job_judges_each_stored_conversation_repairs_an_invalid_verdict_and_counts_them(
    ts_client: Client, task_queue: str
) -> None:
    batch = FakeBatch.of(
        3, judge=JudgePlan(rubric_name="advisor-conversations", rubric_version=1), invalid_verdicts={1: 1},
        failing_positions={2: "Claude API 400: prompt is too long"},
    )
    async with Worker(ts_client, task_queue=task_queue, workflows=[BatchJobWorkflow, BatchItemWorkflow],
                      activities=FakeActivities(batch, ts_client).all()):
        progress = await ts_client.execute_workflow(
            BatchJobWorkflow.run, BatchJobInput(job_id=batch.job_id), id=job_workflow_id(batch.job_id),
            task_queue=task_queue,
        )

    assert (progress.successful, progress.failed, progress.judged) == (2, 1, 2)
    assert batch.judge_calls == 3, "one call each, and the repair of the invalid verdict"
    assert len(batch.verdicts) == 2
    # The job's usage counts the judging too: 3 judge calls at $0.001.
    assert round(progress.usage.cost_usd, 6) == 0.003
