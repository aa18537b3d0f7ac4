"""Claude as judge in a job, on the real stack (Temporal dev server, PostgreSQL, SeaweedFS, the
stand-in over HTTP, the real workers): every conversation judged after it is stored, the job's
counters and cost, and a judge outage or a spoiled verdict handled as generation's are."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.pricing import PriceTable
from brightrun.settings import Settings
from brightrun.storage import judge_raw_key
from devtools.load_catalog import catalog_rubrics
from devtools.standin_control import StandinControl
from models.enums import DeliveryMode, ItemStatus, JobStatus, Tier
from models.judge import Rubric
from models.messages import JobProgress, JudgeRerunProgress, TokenUsage
from models.tables import BatchItem, BatchJob, Conversation, ConversationVerdict, JudgeRubric
from service import batches
from service.job_outcome import job_outcome
from service.judge import start_rerun
from tests.helpers import eventually, launch_and_wait

pytestmark = pytest.mark.usefixtures("pipeline_worker")

RUBRIC = "advisor-conversations"
ONE_ITEM = {"personas": ["Priya Patel"], "arcs": ["Anxiety -> Confidence"], "topics": ["College Savings Plans"]}


async def _rows(sessions: async_sessionmaker, job_id: object) -> tuple[BatchJob, list[BatchItem], list[Conversation], list[ConversationVerdict]]:
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
        items = (await session.scalars(select(BatchItem).where(BatchItem.batch_job_id == job_id))).all()
        conversations = (await session.scalars(select(Conversation).where(Conversation.batch_job_id == job_id))).all()
        verdicts = (await session.scalars(select(ConversationVerdict).where(ConversationVerdict.batch_job_id == job_id))).all()
    assert job is not None
    return job, list(items), list(conversations), list(verdicts)


async def test_every_conversation_of_a_judged_job_is_judged_before_the_job_ends(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    launched = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=["David Chen", "Maria Gonzalez"],
        arcs=["Couple Conflict -> Alignment", "Grief -> Acceptance"], topics=["Paying Down Debt"],
        tier=Tier.TEMPLATE, concurrency=4, user="judged", judge=True,
    )
    progress = await stack_client.get_workflow_handle(launched.workflow_id, result_type=JobProgress).result()
    status = await batches.job_status(sessions, str(launched.job_id), stack_client)

    job, items, conversations, verdicts = await _rows(sessions, launched.job_id)
    assert job.status == JobStatus.COMPLETED and job.shared_parameters["judge"] == {"rubric_name": RUBRIC, "rubric_version": 1}
    assert (job.successful_items, job.judged_items, progress.judged, status.judged) == (4, 4, 4, 4)
    assert all(c.judge_score is not None and (c.judge_rubric, c.judge_rubric_version) == (RUBRIC, 1) for c in conversations)
    assert all(c.judge_model == stack_settings.judge_model for c in conversations)
    assert sorted(v.conversation_pk for v in verdicts) == sorted(c.id for c in conversations)
    judge_cost = sum(c.judge_cost_usd or 0 for c in conversations)
    generation_cost = sum(i.usage["cost_usd"] for i in items)
    assert judge_cost > 0 and job.judge_cost_usd == pytest.approx(judge_cost) == status.judge_cost_usd
    assert job.cost_usd == pytest.approx(generation_cost + judge_cost), "cost_usd is everything, judging included"
    assert progress.usage.cost_usd == pytest.approx(job.cost_usd), "the workflow counts the same cost as the row"
    judge_requests = [e for e in (await standin.stats())["log"] if e["item"] in {str(i.id) for i in items}]
    assert len(judge_requests) == 8, "one generation and one judge call per item"


async def test_a_judge_call_through_an_overload_and_a_refused_key_goes_on_and_spends_no_extra_attempt(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(script=["ok", "529", "401", "ok"], retry_after_s=0)

    launched = await launch_and_wait(sessions, stack_client, stack_settings, **ONE_ITEM, tier=Tier.TEMPLATE, user="judged", judge=True)

    job, items, conversations, verdicts = await _rows(sessions, launched.job_id)
    assert (job.status, items[0].status, job.judged_items) == (JobStatus.COMPLETED, ItemStatus.COMPLETED, 1)
    assert conversations[0].judge_score is not None and len(verdicts) == 1
    assert (await standin.stats())["by_outcome"] == {"ok": 2, "529": 1, "401": 1}


async def test_a_verdict_out_of_range_is_repaired_once_and_the_repair_gives_the_verdict(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(script=["ok", "out_of_range"])

    launched = await launch_and_wait(sessions, stack_client, stack_settings, **ONE_ITEM, tier=Tier.TEMPLATE, user="judged", judge=True)

    job, _items, conversations, verdicts = await _rows(sessions, launched.job_id)
    conversation = conversations[0]
    assert job.judged_items == 1 and len(verdicts) == 1
    assert verdicts[0].raw_key == judge_raw_key("judged", conversation.conversation_id, RUBRIC, 1, repair=True)
    assert conversation.judge_cost_usd == pytest.approx(verdicts[0].cost_usd)
    assert verdicts[0].usage["output_tokens"] > 0


async def test_a_judging_that_fails_leaves_the_item_completed_unjudged_and_its_cost_counted(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(script=["ok", "malformed", "malformed"])

    launched = await launch_and_wait(sessions, stack_client, stack_settings, **ONE_ITEM, tier=Tier.TEMPLATE, user="judged", judge=True)

    job, items, conversations, verdicts = await _rows(sessions, launched.job_id)
    assert (job.status, items[0].status, job.successful_items, job.judged_items) == (JobStatus.COMPLETED, ItemStatus.COMPLETED, 1, 0)
    assert conversations[0].judge_score is None and verdicts == []
    assert conversations[0].judge_cost_usd and conversations[0].judge_cost_usd > 0
    assert job.judge_cost_usd == pytest.approx(conversations[0].judge_cost_usd)
    assert job.cost_usd == pytest.approx(items[0].usage["cost_usd"] + job.judge_cost_usd)


async def test_a_job_launched_without_judging_judges_nothing(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    launched = await launch_and_wait(sessions, stack_client, stack_settings, **ONE_ITEM, tier=Tier.TEMPLATE, user="judged", judge=False)
    status = await batches.job_status(sessions, str(launched.job_id), stack_client)

    job, _items, conversations, _verdicts = await _rows(sessions, launched.job_id)
    assert "judge" not in job.shared_parameters and conversations[0].judge_score is None
    assert (await standin.stats())["requests"] == 1
    assert "judged" not in status.as_json() and "judge_cost_usd" not in status.as_json()


async def test_a_rerun_with_a_new_rubric_version_judges_again_without_regenerating_and_keeps_the_old_verdicts(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    name = f"rerun-{uuid.uuid4().hex[:8]}"
    first = default_rubric().model_copy(update={"name": name})
    await _add_rubric(sessions, first)
    launched = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=["David Chen"], arcs=["Grief -> Acceptance", "Anxiety -> Confidence"],
        topics=["Paying Down Debt"], tier=Tier.TEMPLATE, user="judged", rubric=name, judge=True,
    )
    job_before, _items, _conversations, _verdicts = await _rows(sessions, launched.job_id)
    # Version 2 weighs topic accuracy alone: every overall score becomes that criterion's.
    second = first.model_copy(update={
        "version": 2,
        "criteria": [c.model_copy(update={"weight": 1.0 if c.key == "topic_accuracy" else 0.001}) for c in first.criteria],
    })
    await _add_rubric(sessions, second)
    requests_before = (await standin.stats())["requests"]

    started = await start_rerun(sessions, stack_client, stack_settings, launched.job_id, name)
    again = await start_rerun(sessions, stack_client, stack_settings, launched.job_id, name)
    result = await stack_client.get_workflow_handle(started.workflow_id, result_type=JudgeRerunProgress).result()

    job, items, conversations, verdicts = await _rows(sessions, launched.job_id)
    assert again.workflow_id == started.workflow_id and (started.rubric_name, started.rubric_version) == (name, 2)
    assert (result.judged, result.failed) == (2, 0)
    assert (await standin.stats())["requests"] - requests_before == 2, "one judge call per conversation, no generation"
    assert sorted((v.conversation_pk, v.rubric_version) for v in verdicts) == sorted(
        (c.id, version) for c in conversations for version in (1, 2)
    ), "the old verdicts stay"
    for conversation in conversations:
        assert conversation.judge_rubric_version == 2 and conversation.judge_scores is not None
        assert conversation.judge_score == pytest.approx(conversation.judge_scores["topic_accuracy"]["score"], abs=0.01)
    assert job.judged_items == 2, "a conversation judged again is not counted twice"
    assert job.judge_cost_usd == pytest.approx(job_before.judge_cost_usd + result.usage.cost_usd)
    assert job.shared_parameters["judge"] == {"rubric_name": name, "rubric_version": 2}
    assert all(i.status == ItemStatus.COMPLETED for i in items)


async def _add_rubric(sessions: async_sessionmaker, rubric: Rubric) -> None:
    async with sessions.begin() as session:
        session.add(JudgeRubric(name=rubric.name, version=rubric.version, document=rubric.model_dump(mode="json")))


def default_rubric() -> Rubric:
    return next(r for r in catalog_rubrics() if r.name == RUBRIC)


async def test_in_batch_mode_the_judge_requests_go_through_message_batches_at_half_price(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    launched = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=["James Okafor"], arcs=["Grief -> Acceptance", "Anxiety -> Confidence"],
        topics=["Retirement Income Planning"], tier=Tier.TEMPLATE, user="judged", judge=True, mode=DeliveryMode.BATCH,
    )

    job, items, conversations, verdicts = await _rows(sessions, launched.job_id)
    stats = await standin.stats()
    assert (job.status, job.successful_items, job.judged_items) == (JobStatus.COMPLETED, 2, 2)
    assert stats["requests"] == 0 and stats["batch_requests"] == 4, "generation and judging, all in Message Batches"
    price = PriceTable.load().price_of(stack_settings.judge_model)
    for verdict in verdicts:
        tokens = TokenUsage.model_validate(verdict.usage)
        # Batches ask for the 1-hour cache (a batch may outlive the 5-minute one): its writes are 1-hour ones.
        one_hour = tokens.cache_creation_input_tokens
        assert verdict.cost_usd == pytest.approx(price.cost_usd(tokens, batch=True, one_hour_cache_writes=one_hour))
        assert verdict.cost_usd == pytest.approx(price.cost_usd(tokens, one_hour_cache_writes=one_hour) / 2)
    assert all(c.judge_score is not None for c in conversations) and all(i.status == ItemStatus.COMPLETED for i in items)


async def _judge_call_waiting(standin: StandinControl) -> bool:
    log = (await standin.stats())["log"]
    return len(log) == 2 and log[0]["answered"] and not log[1]["answered"]


async def test_cancelling_a_job_cancels_its_judge_call_and_leaves_the_conversation_unjudged(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(first_token_ms=3000)
    launched = await batches.launch(
        sessions, stack_client, stack_settings,
        batches.LaunchRequest(personas=["Priya Patel"], arcs=["Anxiety -> Confidence"], topics=["College Savings Plans"],
                              tier=Tier.TEMPLATE, user="judged", judge=True),
    )
    await eventually(lambda: _judge_call_waiting(standin), "the judge call waits for its answer")

    await batches.control_job(sessions, stack_client, str(launched.job_id), "cancel")
    assert (await job_outcome(stack_client.get_workflow_handle(launched.workflow_id))).status == JobStatus.CANCELLED

    job, items, conversations, verdicts = await _rows(sessions, launched.job_id)
    assert (job.status, job.judged_items, verdicts) == (JobStatus.CANCELLED, 0, [])
    # The conversation was stored and linked before judging began: the item keeps it.
    assert items[0].status == ItemStatus.COMPLETED and conversations[0].judge_score is None
    assert [e["answered"] for e in (await standin.stats())["log"]] == [True, False], "no judge call after the cancel"


async def test_pausing_a_job_lets_the_judging_in_flight_finish_and_starts_no_new_item(
    sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings, standin: StandinControl
) -> None:
    await standin.configure(first_token_ms=2000)
    launched = await batches.launch(
        sessions, stack_client, stack_settings,
        batches.LaunchRequest(personas=["Priya Patel"], arcs=["Anxiety -> Confidence", "Grief -> Acceptance"],
                              topics=["Paying Down Debt"], tier=Tier.TEMPLATE, user="judged", judge=True, concurrency=1),
    )
    await eventually(lambda: _judge_call_waiting(standin), "the first item's judge call waits for its answer")

    await batches.control_job(sessions, stack_client, str(launched.job_id), "pause")
    await eventually(lambda: _judged(sessions, launched.job_id, 1), "the judging in flight finished")
    paused = await batches.job_status(sessions, str(launched.job_id), stack_client)
    requests_while_paused = (await standin.stats())["requests"]
    await batches.control_job(sessions, stack_client, str(launched.job_id), "resume")
    await stack_client.get_workflow_handle(launched.workflow_id).result()

    job, _items, _conversations, _verdicts = await _rows(sessions, launched.job_id)
    assert (paused.status, paused.judged, paused.completed) == (JobStatus.PAUSED, 1, 1)
    assert requests_while_paused == 2, "the second item did not start while paused"
    assert (job.status, job.judged_items) == (JobStatus.COMPLETED, 2)


async def _judged(sessions: async_sessionmaker, job_id: object, count: int) -> bool:
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
    return job is not None and job.judged_items >= count
