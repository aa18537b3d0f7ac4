"""The chaos suite: a batch runs through real worker processes while a scenario breaks the stack
under it (workers SIGKILLed, Temporal restarted, PostgreSQL or S3 down, API faults, an operator
terminating or resetting an item), then the invariants are checked against PostgreSQL, S3 and the
Claude stand-in's request log:

- the job is final and its workflow closed; every item row is final;
- the job's counters equal its rows (each item counted once);
- one conversation row per successful item, each linked, none orphaned; its S3 objects (raw reply,
  final conversation, enrichment record once enriched) exist and no other object was written;
- Claude answers per successful item <= 1.05: requests the stand-in answered in full with a
  reply (injected faults and calls cut off by a killed worker excluded); in batch mode, the
  requests our Message Batches sent (another user's batch not counted);
- no item failed, except what an operator's action may fail (the terminated item).

    .venv/bin/python -m bench.chaos                      # every full scenario (make chaos)
    .venv/bin/python -m bench.chaos --scenario s3_down_60s --scenario api_faults
    .venv/bin/python -m bench.chaos --quick              # the short ones of `make test`

It starts a stack of its own and writes each scenario's figures to bench/results/chaos.json
(merged by scenario name), and their table to bench/results/chaos.md (docs/chaos.md links it). Exit code 1 when an invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as upsert
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.errors import ANTHROPIC_REFUSED, claude_http_error
from bench.results_file import RESULTS, save_result
from brightrun.db import create_engine, create_sessionmaker
from brightrun.storage import enriched_conversation_key
from brightrun.temporal_client import connect
from devtools import devstack, sample_catalog
from devtools.outage_controls import Outages, WorkerPool
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, ItemStatus, JobStatus, Tier
from models.tables import BatchItem, BatchJob, Conversation, MessageBatch, Persona
from models.workflow_ids import item_workflow_id, message_batches_workflow_id
from service import batches
from tests.helpers import reset_to_first_workflow_task

# The workers' and the starter's settings: fast Claude retries, and enough attempts that 30%
# faults never exhaust an item by chance (0.3^10).
SETTINGS = {
    "claude_calls_per_minute": 6000.0,
    "claude_retry_base_s": 0.2,
    "claude_retry_cap_s": 1.0,
    "claude_max_attempts": 10,
    # Batch mode: batches gathered and polled in about a second.
    "message_batch_gather_s": 0.5,
    "message_batch_poll_initial_s": 0.5,
    "message_batch_poll_max_s": 2.0,
}
CALL = {"latency_ms": 1000, "first_token_ms": 500}  # a 1.5 s call
CALLS_PER_SUCCESS_MAX = 1.05
ARCS = [name for name, _arc_type, _description in sample_catalog.EMOTIONAL_ARCS]
TOPICS = [name for name, _description in sample_catalog.TRAINING_TOPICS]
FINAL_ITEM_STATUSES = [status.value for status in ItemStatus if status.is_final]
# 30% faults in all, the mid-stream ones included.
API_FAULTS = {"429": 0.10, "529": 0.08, "500": 0.06, "midstream_overloaded": 0.03, "midstream_drop": 0.03}


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str  # one line, for the table of results
    act: Callable[[Run], Awaitable[None]]
    items: int = 304
    concurrency: int = 8
    workers: int = 4
    faults: dict[str, float] = field(default_factory=dict)
    failed_allowed: int = 0  # items an operator's action may fail
    mode: DeliveryMode = DeliveryMode.ONLINE
    standin: dict[str, Any] = field(default_factory=dict)  # more stand-in config (batch mode)
    outage_s: float = 0.0  # how long the scenario keeps a part down, for its deadline
    recovery_s: float = 300.0  # how long the engine may take to recover, for its deadline

    @property
    def deadline_s(self) -> float:
        """Three times the undisturbed run, plus the outage, plus the recovery."""
        return 3 * self.items * 1.5 / self.concurrency + self.outage_s + self.recovery_s


class Run:
    """One scenario's batch, and what its act needs to break things under it."""

    def __init__(self, runner: ChaosRunner, scenario: Scenario, job: batches.LaunchedJob, user: str) -> None:
        self.runner = runner
        self.scenario = scenario
        self.job = job
        self.user = user
        self.started = time.monotonic()
        self.timeline: list[str] = []
        self.touched_items: set[uuid.UUID] = set()  # items whose workflows an act terminated or reset

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:6.1f} s  {what}")

    async def finished_items(self) -> int | None:
        """Items with a final row; None while PostgreSQL does not answer."""
        try:
            async with self.runner.sessions() as session:
                return await session.scalar(
                    select(func.count())
                    .select_from(BatchItem)
                    .where(BatchItem.batch_job_id == self.job.job_id, BatchItem.status.in_(FINAL_ITEM_STATUSES))
                )
        except Exception:
            return None

    async def until_done(self, share: float) -> None:
        """Waits until `share` of the items are final."""
        wanted = math.ceil(share * self.job.total_items)
        while ((await self.finished_items()) or 0) < wanted:
            await asyncio.sleep(0.2)
        self.note(f"{wanted} of {self.job.total_items} items final")

    async def item_ids(self, status: ItemStatus) -> list[uuid.UUID]:
        async with self.runner.sessions() as session:
            rows = await session.scalars(
                select(BatchItem.id).where(BatchItem.batch_job_id == self.job.job_id, BatchItem.status == status.value)
            )
            return list(rows)

    async def batch_step_failing(self, error_type: str) -> str:
        """Waits until a step of the job's Message Batches workflow is retried after a failure of
        `error_type` (an Anthropic refusal is what `status` reads); returns its message."""
        handle = self.runner.client.get_workflow_handle(message_batches_workflow_id(self.job.job_id))
        while True:
            with contextlib.suppress(RPCError):  # not started yet
                for pending in (await handle.describe()).raw_description.pending_activities:
                    if pending.HasField("last_failure"):
                        failure = await self.runner.client.data_converter.decode_failure(pending.last_failure)
                        if isinstance(failure, ApplicationError) and failure.type == error_type:
                            return failure.message
            await asyncio.sleep(0.2)

    async def first_claim_size(self) -> int:
        """The request count of the job's first Message Batch, once its requests are claimed."""
        while True:
            async with self.runner.sessions() as session:
                size = await session.scalar(
                    select(MessageBatch.request_count).where(
                        MessageBatch.batch_job_id == self.job.job_id, MessageBatch.request_count > 0
                    )
                )
            if size:
                return size
            await asyncio.sleep(0.1)

    async def adopted_batch_released(self) -> str:
        """Waits until a batch a retried submission adopted has given our requests back."""
        while True:
            async with self.runner.sessions() as session:
                released = await session.scalar(
                    select(MessageBatch.anthropic_batch_id).where(
                        MessageBatch.batch_job_id == self.job.job_id,
                        MessageBatch.adopted_at.is_not(None),
                        MessageBatch.request_count == 0,
                    )
                )
            if released:
                return released
            await asyncio.sleep(0.1)

    async def outage(self, part: str, seconds: float) -> None:
        self.runner.outages.stop(part)
        self.note(f"{part} stopped")
        await asyncio.sleep(seconds)  # the outage itself, not a wait for a condition
        await asyncio.to_thread(self.runner.outages.restart, part)
        self.note(f"{part} back")


# --- what the scenarios do ------------------------------------------------------------------


def kill_all_workers(rounds: int, churn: bool) -> Callable[[Run], Awaitable[None]]:
    async def act(run: Run) -> None:
        pool, workers = run.runner.pool, run.scenario.workers
        for round_number in range(rounds):
            await run.until_done((round_number + 1) / (rounds + 2))
            killed = pool.kill()
            run.note(f"SIGKILL all {len(killed)} workers")
            await asyncio.to_thread(pool.start, workers)
            run.note(f"{workers} workers started")
            if churn:
                await run.until_done((round_number + 1.5) / (rounds + 2))
                killed, _ = await asyncio.to_thread(pool.churn, 0.25)
                run.note(f"churned {len(killed)} of {workers} workers")

    return act


async def restart_temporal(run: Run) -> None:
    await run.until_done(0.3)
    await run.outage("temporal", 0)


def part_down(part: str, seconds: float, at_share: float = 0.2) -> Callable[[Run], Awaitable[None]]:
    async def act(run: Run) -> None:
        await run.until_done(at_share)
        await run.outage(part, seconds)

    return act


async def nothing(run: Run) -> None:
    run.note("faults injected by the stand-in throughout")


async def terminate_an_item(run: Run) -> None:
    """An operator terminates a running item workflow (web UI or CLI)."""
    await run.until_done(0.2)
    while True:
        for item_id in await run.item_ids(ItemStatus.PROCESSING):
            with contextlib.suppress(RPCError):  # it finished meanwhile: take another
                await run.runner.client.get_workflow_handle(item_workflow_id(item_id)).terminate("chaos: terminated")
                run.touched_items.add(item_id)
                run.note(f"item workflow {item_workflow_id(item_id)} terminated")
                return
        await asyncio.sleep(0.1)


async def reset_a_completed_item(run: Run) -> None:
    """An operator resets a completed item workflow to its first workflow task."""
    await run.until_done(0.3)
    item_id = (await run.item_ids(ItemStatus.COMPLETED))[0]
    await reset_to_first_workflow_task(run.runner.client, item_workflow_id(item_id))
    run.touched_items.add(item_id)
    run.note(f"completed item workflow {item_workflow_id(item_id)} reset")


# Refusals at the Message Batches endpoints from before the launch (the scenario's stand-in config).
REFUSED_KEY = {"endpoint_faults": {"batches": {"401": 1.0}}}
NO_ANSWER = {"endpoint_faults": {"batches": {"500": 1.0}}}


def batch_refused(seconds: float) -> Callable[[Run], Awaitable[None]]:
    """The batch endpoints answer 401 (a revoked key) from the first create on, then the key is
    fixed: the job waits, its Message Batches workflow saying why, and goes on."""

    async def act(run: Run) -> None:
        reason = await run.batch_step_failing(ANTHROPIC_REFUSED)
        run.note(f"the job waits: {reason}")
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - run.started)))  # the refusal itself
        await run.runner.standin.configure(endpoint_faults={})
        run.note("key fixed: batch endpoints answer again")

    return act


async def foreign_batch_during_a_lost_create(run: Run) -> None:
    """The first create gets no answer (a 500) after its requests were claimed; meanwhile another
    user of the workspace creates a batch of the same size. The retry must not take it as ours."""
    standin = run.runner.standin
    await run.batch_step_failing(claude_http_error(500))
    size = await run.first_claim_size()
    foreign = await standin.foreign_batch(size)
    run.note(f"a create of {size} requests lost; another user's batch {foreign['id']} of {size} created")
    await standin.configure(endpoint_faults={})
    run.note("batch endpoints answer again")
    released = await run.adopted_batch_released()
    run.note(f"the retry adopted {released} from the listing; its results named none of ours: released")


async def results_shuffled(run: Run) -> None:
    run.note("the stand-in answers every batch's results in another order than its requests")


FULL = [
    Scenario("worker_kills", "all 4 workers SIGKILLed 3 times, a quarter churned after each", kill_all_workers(3, churn=True)),
    Scenario("temporal_restart", "Temporal dev server stopped and restarted at 30%", restart_temporal),
    Scenario("postgres_down_60s", "PostgreSQL down 60 s from 20%", part_down("postgres", 60), outage_s=60),
    Scenario("postgres_down_10min", "PostgreSQL down 10 minutes from 20%", part_down("postgres", 600), outage_s=600),
    # Longer than the 10 attempts of SETTINGS could wait while a call's turn (a PostgreSQL row) is
    # refused: waiting for PostgreSQL must spend no attempt of the call.
    Scenario(
        "postgres_down_60min", "PostgreSQL down 60 minutes during online calls, from 20%",
        part_down("postgres", 3600), outage_s=3600,
    ),
    Scenario("s3_down_60s", "S3 down 60 s from 20%", part_down("seaweed", 60), outage_s=60),
    Scenario("s3_down_10min", "S3 down 10 minutes from 20%", part_down("seaweed", 600), outage_s=600),
    Scenario("api_faults", "30% API faults: 429, 529, 500, mid-stream overload and drop", nothing, faults=API_FAULTS),
    Scenario("item_terminated", "one running item workflow terminated", terminate_an_item, failed_allowed=1),
    Scenario("completed_item_reset", "one completed item workflow reset to its start", reset_a_completed_item),
    Scenario(
        "batch_refused_3min", "batch mode: the batch endpoints answer 401 for 3 minutes, then the key is fixed",
        batch_refused(180), mode=DeliveryMode.BATCH, standin=REFUSED_KEY, outage_s=180,
    ),
    Scenario(
        "batch_foreign_batch", "batch mode: a create lost while another user's batch of the same size appears",
        foreign_batch_during_a_lost_create, mode=DeliveryMode.BATCH, standin=NO_ANSWER,
    ),
    Scenario(
        "batch_results_shuffled", "batch mode: results in another order than the requests", results_shuffled,
        mode=DeliveryMode.BATCH, standin={"shuffle_results": True},
    ),
]
# The short ones run in `make test`: 32 items, outages of 20 s, one kill of every worker.
SHORT: dict[str, Any] = {"items": 32, "concurrency": 4, "workers": 2, "recovery_s": 60.0}
QUICK = [
    Scenario("quick_worker_kill", "both workers SIGKILLed once at 33%", kill_all_workers(1, churn=False), **SHORT),
    Scenario("quick_temporal_restart", "Temporal restarted at 30%", restart_temporal, **SHORT),
    Scenario("quick_postgres_down", "PostgreSQL down 20 s from 20%", part_down("postgres", 20), **SHORT, outage_s=20),
    Scenario("quick_s3_down", "S3 down 20 s from 20%", part_down("seaweed", 20), **SHORT, outage_s=20),
    Scenario("quick_api_faults", "30% API faults, mid-stream ones included", nothing, **SHORT, faults=API_FAULTS),
    Scenario("quick_item_terminated", "one running item workflow terminated", terminate_an_item, **SHORT, failed_allowed=1),
    Scenario("quick_item_reset", "one completed item workflow reset", reset_a_completed_item, **SHORT),
    Scenario(
        "quick_batch_refused", "batch mode: 401 at the batch endpoints for 20 s", batch_refused(20), **SHORT,
        mode=DeliveryMode.BATCH, standin=REFUSED_KEY, outage_s=20,
    ),
    Scenario(
        "quick_batch_foreign_batch", "batch mode: a lost create and another user's same-size batch",
        foreign_batch_during_a_lost_create, **SHORT, mode=DeliveryMode.BATCH, standin=NO_ANSWER,
    ),
    Scenario(
        "quick_batch_results_shuffled", "batch mode: results shuffled", results_shuffled, **SHORT,
        mode=DeliveryMode.BATCH,
        standin={"shuffle_results": True},
    ),
]  # fmt: skip
SCENARIOS = {scenario.name: scenario for scenario in (*FULL, *QUICK)}


# --- the runner -----------------------------------------------------------------------------


class ChaosRunner:
    """Runs scenarios one after the other on the stack started under `root`, with a pool of
    worker processes of its own (fresh task queues)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.settings = devstack.standin_settings(env, **SETTINGS)
        worker_env = {
            "TASK_QUEUE": self.settings.task_queue,
            "CLAUDE_TASK_QUEUE": self.settings.claude_task_queue,
            **{name.upper(): str(value) for name, value in SETTINGS.items()},
        }
        self.outages = Outages(root, env)
        self.pool = WorkerPool(root, {**env, **worker_env})
        self.standin = StandinControl(env["ANTHROPIC_BASE_URL"])
        self.engine = create_engine(self.settings)
        self.sessions = create_sessionmaker(self.engine)
        self.s3 = devstack.s3_client(self.settings)
        self.client: Client

    async def __aenter__(self) -> Self:
        self.client = await connect(self.settings)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.to_thread(self.pool.stop)
        await self.engine.dispose()

    async def run(self, scenario: Scenario) -> dict[str, Any]:
        """Runs the scenario's batch and act, waits for the end (or the deadline), checks."""
        missing = scenario.workers - len(self.pool.running())
        if missing > 0:
            await asyncio.to_thread(self.pool.start, missing)
        await self.standin.reset()
        await self.standin.configure(**CALL, faults=scenario.faults, **scenario.standin)
        personas = await self._personas(math.ceil(scenario.items / (len(ARCS) * len(TOPICS))))
        user = f"chaos-{uuid.uuid4().hex[:8]}"
        request = batches.LaunchRequest(
            personas=personas, arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE,
            concurrency=scenario.concurrency, name=f"chaos {scenario.name}", user=user, mode=scenario.mode,
        )  # fmt: skip
        job = await batches.launch(self.sessions, self.client, self.settings, request)
        run = Run(self, scenario, job, user)
        run.note(f"job {job.job_id} launched: {job.total_items} items")
        act = asyncio.ensure_future(scenario.act(run))
        ended = await self._wait_for_end(run, act)
        await self.standin.configure(faults={})
        return await check(run, ended)

    async def _personas(self, count: int) -> list[str]:
        """`count` personas for the batch's product, created once (the sample catalog has four)."""
        names = [f"Chaos Persona {number:03d}" for number in range(1, count + 1)]
        async with self.sessions.begin() as session:
            rows = [{"name": name, "description": "A synthetic client for the chaos suite."} for name in names]
            await session.execute(upsert(Persona).values(rows).on_conflict_do_nothing(index_elements=["name"]))
        return names

    async def _wait_for_end(self, run: Run, act: asyncio.Future[None]) -> bool:
        """True once the act is over, the job's row and workflow are final and every workflow the
        act touched has closed; False at the deadline (the act is cancelled then)."""
        deadline = run.started + run.scenario.deadline_s
        while time.monotonic() < deadline:
            if act.done() and await self._ended(run):
                act.result()  # an act that failed fails the run
                run.note("job final")
                return True
            await asyncio.sleep(1)
        act.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await act
        run.note(f"deadline of {run.scenario.deadline_s:.0f} s passed")
        return False

    async def _ended(self, run: Run) -> bool:
        try:
            async with self.sessions() as session:
                status = await session.scalar(select(BatchJob.status).where(BatchJob.id == run.job.job_id))
            if not JobStatus(status).is_final:
                return False
            workflow_ids = [run.job.workflow_id, *(item_workflow_id(item) for item in run.touched_items)]
            for workflow_id in workflow_ids:
                described = await self.client.get_workflow_handle(workflow_id).describe()
                if described.status == WorkflowExecutionStatus.RUNNING:
                    return False
        except Exception:  # a part is down: not ended yet
            return False
        return True


# --- the invariants -------------------------------------------------------------------------


async def check(run: Run, ended: bool) -> dict[str, Any]:
    runner, job_id = run.runner, run.job.job_id
    async with runner.sessions() as session:
        job = await session.get(BatchJob, job_id)
        items = (await session.execute(select(BatchItem.id, BatchItem.status, BatchItem.conversation_id).where(BatchItem.batch_job_id == job_id))).all()
        conversations = (await session.execute(
            select(
                Conversation.id, Conversation.conversation_id, Conversation.created_by, Conversation.enriched_at,
                Conversation.raw_storage_path, Conversation.final_storage_path,
            ).where(Conversation.batch_job_id == job_id)
        )).all()  # fmt: skip
    workflow = await runner.client.get_workflow_handle(run.job.workflow_id).describe()

    by_status = Counter(status for _id, status, _conversation in items)
    linked = {conversation for _id, _status, conversation in items if conversation is not None}
    completed_unlinked = sum(1 for _id, status, conversation in items if status == ItemStatus.COMPLETED and conversation is None)
    orphan_rows = [row for row in conversations if row.id not in linked]
    expected_objects = {key for row in conversations if row.id in linked for key in _object_keys_of(row)}
    objects = _object_keys(runner, f"raw/{run.user}/")
    stray_objects = sorted(objects - expected_objects)
    missing_objects = sorted(expected_objects - objects)

    item_ids = {str(item_id) for item_id, _status, _conversation in items}
    stats = await runner.standin.stats()
    requests = [entry for entry in stats["log"] if entry["item"] in item_ids]
    answers = sum(1 for entry in requests if entry["outcome"] == "ok" and entry["answered"])
    if run.scenario.mode == DeliveryMode.BATCH:
        answers = stats["batch_requests"]  # the stand-in's stats are the scenario's: reset before it
    cut_calls = sum(1 for entry in requests if entry["outcome"] == "ok" and not entry["answered"])
    successful = by_status[ItemStatus.COMPLETED]
    calls_per_success = round(answers / successful, 3) if successful else None
    counters = {
        "completed": job.completed_items, "successful": job.successful_items,
        "failed": job.failed_items, "cancelled": job.cancelled_items,
    }  # fmt: skip
    rows = {
        "completed": by_status[ItemStatus.COMPLETED] + by_status[ItemStatus.FAILED],
        "successful": successful,
        "failed": by_status[ItemStatus.FAILED],
        "cancelled": by_status[ItemStatus.CANCELLED],
    }
    invariants = {
        "job_final": ended and JobStatus(job.status).is_final and workflow.status == WorkflowExecutionStatus.COMPLETED,
        "every_item_final": all(ItemStatus(status).is_final for _id, status, _c in items) and len(items) == job.total_items,
        "counters_equal_rows": counters == rows,
        "one_conversation_per_success": completed_unlinked == 0 and not orphan_rows and len(conversations) == successful,
        "s3_objects_exact": not stray_objects and not missing_objects,
        "claude_calls_per_success": calls_per_success is not None and calls_per_success <= CALLS_PER_SUCCESS_MAX,
        "no_item_failed": by_status[ItemStatus.FAILED] <= run.scenario.failed_allowed,
    }
    return {
        "scenario": run.scenario.name,
        "what": run.scenario.what,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": all(invariants.values()),
        "invariants": invariants,
        "items": job.total_items,
        "concurrency": run.scenario.concurrency,
        "workers": run.scenario.workers,
        "faults": run.scenario.faults,
        "wall_time_s": round(time.monotonic() - run.started, 1),
        "job_status": job.status,
        "workflow_status": workflow.status.name if workflow.status else None,
        "items_by_status": dict(by_status),
        "job_counters": counters,
        "conversations": len(conversations),
        "orphan_conversation_rows": len(orphan_rows),
        "completed_items_without_conversation": completed_unlinked,
        "s3_objects": len(objects),
        "s3_stray_objects": stray_objects[:10],
        "s3_missing_objects": missing_objects[:10],
        "claude_requests": len(requests),
        "claude_answers": answers,
        "claude_calls_cut_by_kills": cut_calls,
        "claude_faults": Counter(entry["outcome"] for entry in requests if entry["outcome"] != "ok"),
        "claude_calls_per_success": calls_per_success,
        "failed_item_errors": await _failed_errors(run),
        "timeline": run.timeline,
    }


def _object_keys_of(conversation: Any) -> list[str]:
    """The raw reply, the final conversation and, once enriched, its enrichment record."""
    keys = [conversation.raw_storage_path, conversation.final_storage_path]
    if conversation.enriched_at is not None:
        keys.append(enriched_conversation_key(conversation.created_by, conversation.conversation_id))
    return keys


def _object_keys(runner: ChaosRunner, prefix: str) -> set[str]:
    keys: set[str] = set()
    pages = runner.s3.get_paginator("list_objects_v2").paginate(Bucket=runner.settings.conversation_bucket, Prefix=prefix)
    for page in pages:
        keys.update(entry["Key"] for entry in page.get("Contents", []))
    return keys


async def _failed_errors(run: Run) -> list[str]:
    async with run.runner.sessions() as session:
        errors = await session.scalars(
            select(BatchItem.error_message).where(BatchItem.batch_job_id == run.job.job_id, BatchItem.status == ItemStatus.FAILED.value)
        )
        return sorted(Counter(error or "" for error in errors).elements())[:10]


# --- command line ---------------------------------------------------------------------------

CHAOS_RESULTS = RESULTS / "chaos.json"
CHAOS_TABLE = RESULTS / "chaos.md"


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """The table of results: one row per scenario, the failed invariants named."""
    lines = [
        "| scenario | items | result | calls/success | calls cut off | faults | failed | wall time | recorded (UTC) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        if name not in results:
            continue
        result = results[name]
        failed = [invariant for invariant, held in result["invariants"].items() if not held]
        verdict = "all invariants hold" if not failed else "FAILS " + ", ".join(failed)
        lines.append(
            f"| {name}: {result['what']} | {result['items']} | {verdict} | {result['claude_calls_per_success']} "
            f"| {result['claude_calls_cut_by_kills']} | {sum(result['claude_faults'].values())} "
            f"| {result['items_by_status'].get('failed', 0)} | {result['wall_time_s']:.0f} s "
            f"| {result['recorded_at'][:16].replace('T', ' ')} |"
        )
    return "\n".join(lines)


async def run_scenarios(names: list[str]) -> dict[str, dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="chaos-stack-"))
    env = devstack.start(devstack.isolated_config(root))
    results: dict[str, dict[str, Any]] = {}
    try:
        async with ChaosRunner(root, env) as runner:
            for name in names:
                print(f"chaos: {name}: {SCENARIOS[name].what}", flush=True)
                results[name] = await runner.run(SCENARIOS[name])
                print(json.dumps(results[name], indent=2, default=str), flush=True)
    finally:
        devstack.stop(root)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default: every full one")
    parser.add_argument("--quick", action="store_true", help="the short scenarios of make test")
    args = parser.parse_args()
    names = args.scenario or [scenario.name for scenario in (QUICK if args.quick else FULL)]
    results = asyncio.run(run_scenarios(names))
    recorded = json.loads(CHAOS_RESULTS.read_text())["scenarios"] if CHAOS_RESULTS.exists() else {}
    recorded.update(json.loads(json.dumps(results, default=str)))
    save_result("chaos", {"scenarios": recorded})
    table = markdown_table(recorded)
    CHAOS_TABLE.write_text(table + "\n")
    print(table)
    sys.exit(0 if all(result["passed"] for result in results.values()) else 1)


if __name__ == "__main__":
    main()
