"""Judging through a crash: a real `python worker.py` process, on a stack of its own, SIGKILLed
while its judge call waits for Claude's answer. The verdict is paid for once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.temporal_client import connect
from devtools import devstack
from devtools.outage_controls import WorkerPool
from devtools.standin_control import StandinControl
from models.enums import ItemStatus, JobStatus, Tier
from models.messages import TokenUsage
from models.tables import BatchItem, BatchJob, Conversation, ConversationVerdict
from service import batches
from tests.helpers import eventually


@pytest.fixture
def recovery_settings(outage_stack: tuple[Path, dict[str, str]]) -> Settings:
    _root, env = outage_stack
    return devstack.standin_settings(env)


@pytest.fixture
def workers(outage_stack: tuple[Path, dict[str, str]], recovery_settings: Settings) -> Iterator[WorkerPool]:
    root, env = outage_stack
    pool = WorkerPool(
        root, {**env, "TASK_QUEUE": recovery_settings.task_queue, "CLAUDE_TASK_QUEUE": recovery_settings.claude_task_queue}
    )
    yield pool
    pool.kill()


@pytest.fixture
async def recovery_sessions(recovery_settings: Settings) -> AsyncIterator[async_sessionmaker]:
    engine = create_engine(recovery_settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def recovery_standin(recovery_settings: Settings) -> AsyncIterator[StandinControl]:
    assert recovery_settings.anthropic_base_url is not None
    control = StandinControl(recovery_settings.anthropic_base_url)
    await control.reset()
    yield control
    await control.reset()


async def test_a_worker_killed_while_its_judge_call_waits_for_the_answer_pays_for_one_verdict(
    workers: WorkerPool, recovery_settings: Settings, recovery_sessions: async_sessionmaker, recovery_standin: StandinControl
) -> None:
    workers.start(1)
    # Every answer starts slowly: time to kill the worker while the judge call waits for its answer.
    await recovery_standin.configure(first_token_ms=4000)
    client = await connect(recovery_settings)
    launched = await batches.launch(
        recovery_sessions, client, recovery_settings,
        batches.LaunchRequest(personas=["Priya Patel"], arcs=["Anxiety -> Confidence"], topics=["Paying Down Debt"],
                              tier=Tier.TEMPLATE, judge=True),
    )

    async def judge_call_waiting() -> bool:
        log = (await recovery_standin.stats())["log"]
        return len(log) == 2 and log[0]["answered"] and not log[1]["answered"]

    await eventually(judge_call_waiting, "the generation answered and the judge call waits for its answer")
    assert workers.kill(), "the worker was running"
    await recovery_standin.configure(first_token_ms=0)
    workers.start(1)
    await client.get_workflow_handle(launched.workflow_id).result()

    async with recovery_sessions() as session:
        job = await session.get(BatchJob, launched.job_id)
        item = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == launched.job_id))).one()
        conversation = (await session.scalars(select(Conversation).where(Conversation.batch_job_id == launched.job_id))).one()
        verdicts = (await session.scalars(select(ConversationVerdict).where(ConversationVerdict.batch_job_id == launched.job_id))).all()
    log = (await recovery_standin.stats())["log"]
    assert job is not None and (job.status, item.status, job.judged_items) == (JobStatus.COMPLETED, ItemStatus.COMPLETED, 1)
    assert [entry["answered"] for entry in log] == [True, False, True], "one generation, one verdict answered"
    assert len(verdicts) == 1 and conversation.judge_score == verdicts[0].overall
    usage = TokenUsage.model_validate(conversation.judge_usage)
    assert job.judge_cost_usd == pytest.approx(usage.cost_usd) and usage.cost_usd > 0
