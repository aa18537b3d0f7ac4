"""The batch and item workflows on the time-skipping server, with in-memory activities."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from models.enums import ItemStatus, JobStatus
from models.messages import BatchJobInput, JobProgress
from models.workflow_ids import job_workflow_id
from service.job_outcome import job_outcome
from tests.fakes import FakeActivities, FakeBatch
from tests.helpers import run_lengths
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow


async def run_batch(client: Client, task_queue: str, batch: FakeBatch, **knobs: Any) -> JobProgress:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow],
        activities=FakeActivities(batch, client).all(),
    ):
        # A failed job's execution fails (its progress in the failure's details).
        return await job_outcome(
            await client.start_workflow(
                BatchJobWorkflow.run,
                BatchJobInput(job_id=batch.job_id, **knobs),
                id=job_workflow_id(batch.job_id),
                task_queue=task_queue,
            )
        )


async def test_every_item_runs_once_and_the_job_completes(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(8, concurrency=3)

    progress = await run_batch(ts_client, task_queue, batch)

    assert progress.status == JobStatus.COMPLETED
    assert (progress.completed, progress.successful, progress.failed, progress.remaining) == (8, 8, 0, 0)
    assert progress.usage.input_tokens == 8 * 100
    assert batch.job_status == JobStatus.COMPLETED
    assert [i.status for i in batch.items] == [ItemStatus.COMPLETED] * 8
    assert [i.finish_calls for i in batch.items] == [1] * 8
    assert batch.max_in_flight <= 3


async def test_small_pages_and_history_limit_force_several_continue_as_new_runs(
    ts_client: Client, task_queue: str
) -> None:
    batch = FakeBatch.of(40, concurrency=4, claude_delay_s=0.5)

    progress = await run_batch(ts_client, task_queue, batch, page_size=5, history_event_limit=60)

    assert progress.runs >= 3, "the history limit should have forced continue-as-new"
    assert progress.status == JobStatus.COMPLETED
    assert (progress.completed, progress.successful) == (40, 40)
    assert [i.finish_calls for i in batch.items] == [1] * 40, "no item may run twice across runs"
    assert batch.generate_calls == 40
    assert batch.max_in_flight <= 4


async def test_a_failed_item_keeps_its_real_error_and_the_rest_complete(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(5, failing_positions={2: "Claude API 400: prompt is too long"})

    progress = await run_batch(ts_client, task_queue, batch)

    assert progress.status == JobStatus.COMPLETED
    assert (progress.successful, progress.failed) == (4, 1)
    failed = batch.items[2]
    assert failed.status == ItemStatus.FAILED
    assert failed.error_message == "Claude API 400: prompt is too long"


async def test_a_job_whose_every_item_fails_ends_failed_with_the_reason(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(3, failing_positions={0: "bad", 1: "bad", 2: "bad"})

    progress = await run_batch(ts_client, task_queue, batch)

    assert progress.status == JobStatus.FAILED
    assert batch.job_status == JobStatus.FAILED
    assert batch.job_error is not None
    assert "all 3 items failed" in batch.job_error


async def test_what_succeeded_is_enriched_in_pages_before_the_job_is_final(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(7, failing_positions={4: "Claude API 400: prompt is too long"}, enrich_page_size=2)

    progress = await run_batch(ts_client, task_queue, batch)

    assert progress.status == JobStatus.COMPLETED
    succeeded = {i.item_id for i in batch.items if i.status == ItemStatus.COMPLETED}
    assert batch.enriched == succeeded and len(succeeded) == 6
    assert batch.enriched_when_final == 6, "the final status is written only after enrichment"


async def test_a_long_final_enrichment_continues_as_new_and_no_run_passes_the_limit(
    own_ts_client: Client, task_queue: str
) -> None:
    """On a server of its own, with a limit whose margin (a fifth) holds what arrives while a
    loaded machine's workflow task runs: at 150, runs of the items' phase reached 156 in the
    suite under load (their reports come in while the run waits to continue as new)."""
    ts_client = own_ts_client
    # Enrichment far behind the items (none while they run, a conversation a page): all 60 pages
    # are left to the job's end, some 360 events against a limit of 200.
    batch = FakeBatch.of(60, concurrency=5, enrich_page_size=1)
    limit = 200

    progress = await run_batch(ts_client, task_queue, batch, enrich_every=1000, history_event_limit=limit)

    assert progress.status == JobStatus.COMPLETED and progress.successful == 60
    assert batch.enriched == {i.item_id for i in batch.items} and batch.enriched_when_final == 60
    lengths = await run_lengths(ts_client, job_workflow_id(batch.job_id))
    assert max(lengths) <= limit, f"a run passed the limit: {lengths}"
    assert batch.job_status == JobStatus.COMPLETED and [i.finish_calls for i in batch.items] == [1] * 60


async def test_conversations_are_enriched_while_the_items_still_run(ts_client: Client, task_queue: str) -> None:
    batch = FakeBatch.of(12, concurrency=2, enrich_page_size=2)

    progress = await run_batch(ts_client, task_queue, batch, enrich_every=3)

    assert progress.status == JobStatus.COMPLETED
    assert batch.enriched == {i.item_id for i in batch.items} and batch.enriched_when_final == 12
    assert any(done < 12 for done in batch.items_done_at_enrichment), batch.items_done_at_enrichment
