"""Runs a Bright Run worker: the batch and item workflows and every activity, against the
environment's settings. Clients are built once here and handed to the activity classes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta

from anthropic import AsyncAnthropic
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import FixedSizeSlotSupplier, Worker, WorkerTuner

from activities.claude import HEARTBEAT_THROTTLE, ClaudeActivities
from activities.claude_pacing import CallPacer
from activities.claude_slots import CallSlots
from activities.conversations import ConversationActivities
from activities.enrichment import EnrichmentActivities
from activities.export import ExportActivities
from activities.item_workflows import WorkflowActivities
from activities.items import ItemActivities
from activities.jobs import JobActivities
from activities.judge import JudgeActivities
from activities.message_batches import MessageBatchActivities
from activities.templates import TemplateActivities
from brightrun.claude_client import create_claude_client
from brightrun.db import create_engine, create_sessionmaker
from brightrun.logs import configure_logging, get_logger
from brightrun.pricing import PriceTable
from brightrun.settings import Settings, get_settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect, run_and_exit, temporal_address
from workflows.batch_item import BatchItemWorkflow
from workflows.batch_job import BatchJobWorkflow
from workflows.export import ExportWorkflow
from workflows.judge_rerun import JudgeRerunWorkflow
from workflows.message_batches import MessageBatchesWorkflow

log = get_logger("worker")


def build_workers(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], storage: Storage, claude: AsyncAnthropic
) -> list[Worker]:
    """The workflows and data steps on the main task queue; the Claude calls on their own queue,
    with a calls-per-minute limit shared by every worker of that queue."""
    return [
        build_main_worker(client, settings, sessions, storage, claude),
        build_claude_worker(client, settings, sessions, storage, claude),
    ]


def load_prices(settings: Settings) -> PriceTable:
    """Refuses to start when CLAUDE_MODEL or JUDGE_MODEL has no price: better than calls nobody
    can account for."""
    prices = PriceTable.load(settings.model_prices_file)
    try:
        prices.price_of(settings.claude_model)
        prices.price_of(settings.judge_model)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return prices


def build_main_worker(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], storage: Storage, claude: AsyncAnthropic
) -> Worker:
    """The workflows, every data step (database and storage) and the Message Batches endpoints
    (they are not rate limited like online calls)."""
    jobs = JobActivities(sessions, storage)
    templates = TemplateActivities(sessions, storage)
    conversations = ConversationActivities(storage, settings.quality_min_score)
    items = ItemActivities(jobs, templates, conversations, client)
    item_workflows = WorkflowActivities(client)
    enrichment = EnrichmentActivities(sessions, storage, settings.enrichment_page_size, settings.near_duplicate_threshold)
    exports = ExportActivities(sessions, storage, settings.export_page_size)
    judging = JudgeActivities(sessions, storage)
    message_batches = MessageBatchActivities(sessions, storage, claude, settings, load_prices(settings), client)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[BatchJobWorkflow, BatchItemWorkflow, ExportWorkflow, MessageBatchesWorkflow, JudgeRerunWorkflow],
        activities=[
            jobs.start_job,
            jobs.list_queued_items,
            items.prepare_item,
            items.complete_item,
            # Each step alone: items started before the steps were merged, and finish_item for
            # an item that fails or is cancelled.
            jobs.begin_item,
            jobs.link_conversation,
            jobs.finish_item,
            jobs.record_unreported_items,
            item_workflows.start_item_workflows,
            item_workflows.ended_workflows,
            item_workflows.request_cancellation,
            jobs.cancel_queued_items,
            jobs.set_job_status,
            jobs.write_job_log,
            templates.select_template,
            templates.resolve_template,
            conversations.store_conversation,
            judging.prepare_judging,
            judging.record_verdict,
            judging.record_judge_failure,
            judging.list_conversations_to_judge,
            enrichment.enrich_conversations,
            exports.plan_export,
            exports.write_export_page,
            exports.finish_export,
            exports.fail_export,
            message_batches.stage_request,
            message_batches.submit_batch,
            message_batches.poll_batch,
            message_batches.collect_results,
            message_batches.store_results,
            message_batches.announce_results,
            message_batches.cancel_batches,
            message_batches.check_request,
        ],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
    )


def build_claude_worker(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], storage: Storage, claude: AsyncAnthropic
) -> Worker:
    """The Claude calls, paced at the queue's calls per minute by a turn every worker of the
    queue takes from the database (activities/claude_pacing.py), not by Temporal's task queue
    rate limit, which the queue's partitions split into shares that go unused."""
    pacer = CallPacer(sessions, settings.claude_task_queue, settings.claude_calls_per_minute)
    generation = ClaudeActivities(claude, storage, pacer, settings, load_prices(settings))
    return Worker(
        client,
        task_queue=settings.claude_task_queue,
        activities=[generation.generate_conversation, generation.judge_conversation],
        # A call is taken from the queue once it has a turn: the rest wait there, handed out
        # fairly between jobs. The queue has no workflows and runs no local activities.
        tuner=WorkerTuner.create_composite(
            workflow_supplier=FixedSizeSlotSupplier(1),
            activity_supplier=CallSlots(pacer, settings.claude_max_calls_in_flight()),
            local_activity_supplier=FixedSizeSlotSupplier(1),
            nexus_supplier=FixedSizeSlotSupplier(1),
        ),
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
    )


async def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    engine = create_engine(settings)
    client = await connect(settings)
    workers = build_workers(client, settings, create_sessionmaker(engine), Storage(settings), create_claude_client(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "worker started",
        task_queue=settings.task_queue,
        temporal=temporal_address(settings),
        claude_task_queue=settings.claude_task_queue,
        claude_calls_per_minute=settings.claude_calls_per_minute,
        claude_max_calls_in_flight=settings.claude_max_calls_in_flight(),
        claude_model=settings.claude_model,
        claude="offline stand-in" if settings.uses_standin else "Anthropic API",
    )
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        await stop.wait()
        log.info("worker stopping: running activities may finish", grace_s=settings.worker_shutdown_grace_s)
        # All workers at once, so stopping takes the grace period at most.
        await asyncio.gather(*(worker.shutdown() for worker in workers))
    await engine.dispose()
    log.info("worker stopped")


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main()))
