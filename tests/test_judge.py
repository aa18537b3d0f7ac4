"""Claude as judge, slice by slice: the rubric and the verdict (pure), then the judge call through
the same Claude call as generation (the real SDK to an in-process stand-in, in Temporal's
ActivityEnvironment) with its data steps on the real stack's PostgreSQL and S3."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.claude import ClaudeActivities
from activities.errors import INVALID_VERDICT
from activities.judge import JudgeActivities
from brightrun.model_traits import estimated_tokens, traits_of
from brightrun.pricing import PriceTable
from brightrun.settings import Settings
from brightrun.storage import Storage, judge_raw_key
from devtools.load_catalog import catalog_rubrics
from devtools.standin_control import StandinControl
from devtools.standin_judge import stand_in_scores
from models.judge import MAX_REASON_CHARS, VERDICT_TOOL, Rubric, VerdictProblem, parse_verdict
from models.messages import (
    CallProgress,
    GeneratedRaw,
    JudgeInput,
    PrepareJudgingInput,
    RecordVerdictInput,
    RefusalDetails,
    RepairRequest,
)
from models.tables import BatchJob, Conversation, ConversationVerdict
from tests.conversations import dialogue, new_conversation, new_job

RUBRIC = "advisor-conversations"


def default_rubric() -> Rubric:
    return next(r for r in catalog_rubrics() if r.name == RUBRIC)


def good_input(rubric: Rubric, score: int = 4) -> dict[str, Any]:
    return {key: {"score": score, "reason": f"The {key} is fine."} for key in rubric.criterion_keys}


# --- the rubric and the verdict -------------------------------------------------------------


def test_the_default_rubric_has_the_domains_criteria_and_is_long_enough_to_be_cached() -> None:
    rubric = default_rubric()

    assert rubric.criterion_keys == [
        "persona_fidelity", "emotional_arc", "topic_accuracy", "naturalness", "training_usefulness",
    ]
    assert all(set(c.anchors) == {"1", "2", "3", "4", "5"} for c in rubric.criteria)
    assert len(rubric.examples) >= 3
    # The cached prefix must reach the judge model's minimum, or every call pays it in full.
    assert estimated_tokens(rubric.system_text()) >= traits_of(Settings().judge_model).cache_min_tokens


def test_the_verdict_tool_requires_a_score_and_a_reason_for_every_criterion() -> None:
    rubric = default_rubric()
    tool = rubric.verdict_tool()

    assert tool["name"] == VERDICT_TOOL
    assert tool["input_schema"]["required"] == rubric.criterion_keys
    one = tool["input_schema"]["properties"]["naturalness"]
    assert one["required"] == ["score", "reason"]
    assert (one["properties"]["score"]["minimum"], one["properties"]["score"]["maximum"]) == (1, 5)


def test_the_overall_score_weighs_each_criterion_as_the_rubric_says() -> None:
    rubric = default_rubric()
    tool_input = good_input(rubric, 4)
    tool_input["topic_accuracy"]["score"] = 1  # weight 1.5 of 6

    verdict = parse_verdict(rubric, tool_input)

    assert verdict.scores["topic_accuracy"] == 1
    assert verdict.overall == round((4 * 1 + 4 * 1 + 1 * 1.5 + 4 * 1 + 4 * 1.5) / 6, 2) == 3.25
    assert (verdict.rubric_name, verdict.rubric_version) == (RUBRIC, 1)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda v: v.pop("naturalness"), "missing naturalness"),
        (lambda v: v.update(tone={"score": 3, "reason": "x"}), "unknown tone"),
        (lambda v: v["emotional_arc"].update(score=7), "emotional_arc: score: Input should be less than or equal to 5"),
        (lambda v: v["emotional_arc"].update(score=0), "emotional_arc: score: Input should be greater than or equal to 1"),
        (lambda v: v["emotional_arc"].update(score="high"), "emotional_arc: score: Input should be a valid integer"),
        (lambda v: v["emotional_arc"].update(score=4.5), "emotional_arc: score: Input should be a valid integer"),
        (lambda v: v["emotional_arc"].update(reason="  "), "emotional_arc: reason: Value error, the reason is blank"),
        (lambda v: v["emotional_arc"].update(reason="x" * (MAX_REASON_CHARS + 1)), "emotional_arc: reason: String should have at most"),
        (lambda v: v["emotional_arc"].pop("reason"), "emotional_arc: reason: Field required"),
    ],
)
def test_a_verdict_out_of_shape_or_range_is_refused_saying_what_is_wrong(spoil: Any, problem: str) -> None:
    rubric = default_rubric()
    tool_input = good_input(rubric)
    spoil(tool_input)

    with pytest.raises(VerdictProblem) as raised:
        parse_verdict(rubric, tool_input)

    assert problem in str(raised.value)


def test_a_rubric_whose_anchor_example_leaves_a_criterion_unscored_is_refused() -> None:
    document = default_rubric().model_dump()
    del document["examples"][0]["scores"]["naturalness"]

    with pytest.raises(ValueError, match="must score and explain every criterion"):
        Rubric.model_validate(document)


# --- the judge call and its data steps ------------------------------------------------------


class TurnAtOnce:
    """Every call's turn is now: pacing is the generation's, tested in tests/test_claude_pacing.py."""

    async def turn_for_call(self, max_wait_s: float) -> float:
        return 0.0


@dataclasses.dataclass
class Rig:
    claude: ClaudeActivities
    judge: JudgeActivities
    standin: StandinControl
    settings: Settings
    sessions: async_sessionmaker
    storage: Storage
    env: ActivityEnvironment
    sent: list[dict[str, Any]]
    progress: list[dict[str, Any]]

    async def conversation(self, text: str = "") -> tuple[uuid.UUID, uuid.UUID, str]:
        """A job and one stored conversation of a new user; `text` goes into its first turn."""
        user = f"judge-{uuid.uuid4().hex[:8]}"
        job_id = await new_job(self.sessions, user)
        turns = dialogue(uuid.uuid4().hex[:6])
        turns[0]["content"] += text
        return job_id, await new_conversation(self.sessions, self.storage, job_id, user, turns), user

    async def prepare(self, job_id: uuid.UUID, conversation_id: uuid.UUID, user: str) -> JudgeInput:
        prepared = await self.judge.prepare_judging(
            PrepareJudgingInput(job_id=job_id, item_id=uuid.uuid4(), conversation_id=conversation_id, user_id=user, rubric_name=RUBRIC)
        )
        assert prepared.request is not None
        return prepared.request

    async def call(self, request: JudgeInput) -> GeneratedRaw:
        return await self.env.run(self.claude.judge_conversation, request)

    def next_attempt(self) -> None:
        self.env.info = dataclasses.replace(
            self.env.info, attempt=self.env.info.attempt + 1, heartbeat_details=self.progress[-1:]
        )


@pytest.fixture
async def rig(base_url: str, sessions: async_sessionmaker, storage: Storage) -> AsyncIterator[Rig]:
    sent: list[dict[str, Any]] = []

    async def keep_body(request: httpx2.Request) -> None:
        sent.append(json.loads(request.content))

    # A judge model that does not think: its tool call can be forced (a thinking one's: below).
    settings = Settings(
        anthropic_base_url=base_url, anthropic_api_key=None, claude_rate_limit_max_wait_s=5, judge_model="claude-haiku-4-5"
    )
    http = httpx2.AsyncClient(event_hooks={"request": [keep_body]})
    async with anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0, http_client=http) as client:
        progress: list[dict[str, Any]] = []
        env = ActivityEnvironment()
        env.on_heartbeat = lambda *details: progress.append(details[0].model_dump(mode="json"))
        env.info = dataclasses.replace(
            env.info, heartbeat_timeout=timedelta(seconds=20), retry_policy=RetryPolicy(maximum_attempts=0),
            started_time=datetime.now(UTC), start_to_close_timeout=timedelta(seconds=settings.judge_attempt_timeout_s()),
        )
        claude = ClaudeActivities(client, storage, TurnAtOnce(), settings, PriceTable.load())  # type: ignore[arg-type]
        yield Rig(claude, JudgeActivities(sessions, storage), StandinControl(base_url), settings, sessions, storage, env, sent, progress)


async def test_a_conversation_is_judged_with_the_forced_verdict_tool_and_its_verdict_recorded(rig: Rig) -> None:
    job_id, conversation_id, user = await rig.conversation("\njudge-score: 2\njudge-score naturalness: 5")
    request = await rig.prepare(job_id, conversation_id, user)

    judged = await rig.call(request)
    verdict = await rig.judge.record_verdict(RecordVerdictInput(job_id=job_id, request=request, judgings=[judged]))

    sent = rig.sent[0]
    rubric = default_rubric()
    assert sent["model"] == rig.settings.judge_model == judged.model
    assert sent["max_tokens"] == rig.settings.judge_max_tokens
    assert sent["tool_choice"] == {"type": "tool", "name": VERDICT_TOOL} and sent["tools"] == [rubric.verdict_tool()]
    assert sent["system"] == [{"type": "text", "text": rubric.system_text(), "cache_control": {"type": "ephemeral"}}]
    assert "judge-score: 2" in sent["messages"][0]["content"]
    assert judged.raw_key == judge_raw_key(user, conversation_id, RUBRIC, 1)
    # The stand-in scored 2 everywhere but naturalness (5): weighted (2+2+2*1.5+5+2*1.5)/6.
    assert verdict.overall == 2.5 == round((2 + 2 + 3 + 5 + 3) / 6, 2)
    assert judged.usage.cost_usd == pytest.approx(PriceTable.load().price_of(judged.model).cost_usd(judged.usage))
    async with rig.sessions() as session:
        row = (await session.scalars(select(Conversation).where(Conversation.conversation_id == conversation_id))).one()
        history = (await session.scalars(select(ConversationVerdict).where(ConversationVerdict.conversation_pk == row.id))).all()
        job = await session.get(BatchJob, job_id)
    assert job is not None
    assert (row.judge_score, row.judge_rubric, row.judge_rubric_version, row.judge_model) == (2.5, RUBRIC, 1, judged.model)
    assert row.judge_scores is not None and row.judge_scores["naturalness"]["score"] == 5
    assert row.judge_scores["topic_accuracy"]["reason"]
    assert row.judge_cost_usd == pytest.approx(judged.usage.cost_usd) and judged.usage.cost_usd > 0
    assert [(h.overall, h.rubric_version, h.raw_key) for h in history] == [(2.5, 1, judged.raw_key)]
    assert (job.judged_items, job.judge_cost_usd) == (1, pytest.approx(judged.usage.cost_usd))
    assert job.cost_usd == pytest.approx(judged.usage.cost_usd), "the job's cost counts its judging too"


async def test_the_rubric_is_read_from_the_prompt_cache_from_the_second_conversation_on(rig: Rig) -> None:
    first = await rig.call(await rig.prepare(*await rig.conversation()))
    second = await rig.call(await rig.prepare(*await rig.conversation()))

    assert first.usage.cache_creation_input_tokens >= traits_of(rig.settings.judge_model).cache_min_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cost_usd < first.usage.cost_usd


async def test_the_stand_ins_scores_follow_the_conversations_text() -> None:
    keys = default_rubric().criterion_keys
    text = "some conversation"

    assert stand_in_scores(keys, text) == stand_in_scores(keys, text), "deterministic"
    assert set(stand_in_scores(keys, text).values()) <= {3, 4, 5}
    assert set(stand_in_scores(keys, text + "\njudge-score: 1").values()) == {1}


@pytest.mark.parametrize("fault", ["out_of_range", "malformed", "truncated"])
async def test_a_spoiled_verdict_is_repaired_once_and_both_calls_are_paid_for(rig: Rig, fault: str) -> None:
    job_id, conversation_id, user = await rig.conversation("\njudge-score: 4")
    request = await rig.prepare(job_id, conversation_id, user)
    await rig.standin.configure(script=[fault])

    first = await rig.call(request)
    with pytest.raises(ApplicationError) as raised:
        await rig.judge.record_verdict(RecordVerdictInput(job_id=job_id, request=request, judgings=[first]))
    problem = str(raised.value.details[0])
    repair = request.model_copy(update={"repair": RepairRequest(rejected_raw_key=first.raw_key, problem=problem)})
    second = await rig.call(repair)
    verdict = await rig.judge.record_verdict(RecordVerdictInput(job_id=job_id, request=request, judgings=[first, second]))

    assert (raised.value.type, raised.value.non_retryable) == (INVALID_VERDICT, True)
    assert first.raw_key in raised.value.message
    # The repair answers the rejected tool call with an error result naming the problem.
    rejected_call, result = rig.sent[1]["messages"][1], rig.sent[1]["messages"][2]
    assert rejected_call["role"] == "assistant" and rejected_call["content"][0]["type"] == "tool_use"
    assert result["content"][0]["is_error"] is True and problem in result["content"][0]["content"]
    assert second.raw_key == judge_raw_key(user, conversation_id, RUBRIC, 1, repair=True) != first.raw_key
    assert verdict.overall == 4.0
    assert verdict.usage.cost_usd == pytest.approx(first.usage.cost_usd + second.usage.cost_usd)


async def test_a_verdict_recorded_twice_is_counted_once(rig: Rig) -> None:
    job_id, conversation_id, user = await rig.conversation()
    request = await rig.prepare(job_id, conversation_id, user)
    judged = await rig.call(request)
    record = RecordVerdictInput(job_id=job_id, request=request, judgings=[judged])

    first = await rig.judge.record_verdict(record)
    again = await rig.judge.record_verdict(record)  # a retried step
    prepared_again = await rig.judge.prepare_judging(
        PrepareJudgingInput(job_id=job_id, item_id=request.item_id, conversation_id=conversation_id, user_id=user, rubric_name=RUBRIC)
    )

    assert again == first
    assert prepared_again.request is None and prepared_again.recorded == first, "no second judge call is paid for"
    async with rig.sessions() as session:
        job = await session.get(BatchJob, job_id)
    assert job is not None and (job.judged_items, job.judge_cost_usd) == (1, pytest.approx(judged.usage.cost_usd))


@pytest.mark.parametrize("status", ["429", "529"])
async def test_a_judge_call_refused_for_load_is_retried_like_a_generation(rig: Rig, status: str) -> None:
    request = await rig.prepare(*await rig.conversation())
    await rig.standin.configure(script=[status], retry_after_s=1)

    with pytest.raises(ApplicationError) as raised:
        await rig.call(request)
    rig.next_attempt()
    judged = await rig.call(request)

    assert (raised.value.type, raised.value.non_retryable) == (f"claude_{status}", False)
    assert raised.value.next_retry_delay is not None and raised.value.next_retry_delay >= timedelta(seconds=1)
    assert CallProgress.model_validate(rig.progress[-1]).requests_sent == 2
    assert judged.attempt == 2


async def test_a_judge_call_refused_for_the_account_waits_spending_no_attempt(rig: Rig) -> None:
    request = await rig.prepare(*await rig.conversation())
    await rig.standin.configure(script=["401", "401"])

    for _ in range(2):
        with pytest.raises(ApplicationError) as raised:
            await rig.call(request)
        rig.next_attempt()
    judged = await rig.call(request)

    assert raised.value.type == "anthropic_refused" and not raised.value.non_retryable
    assert isinstance(raised.value.details[0], RefusalDetails)
    assert CallProgress.model_validate(rig.progress[-1]).requests_sent == 1, "refusals spent no attempt"
    assert judged.stop_reason == "tool_use"


async def test_an_attempt_after_a_lost_worker_stores_the_verdict_it_paid_for_without_calling_again(rig: Rig) -> None:
    request = await rig.prepare(*await rig.conversation())
    await rig.call(request)
    paid = CallProgress.model_validate(next(p for p in reversed(rig.progress) if p["reply"] is not None))
    # The worker died after the paid reply's heartbeat, before the activity completed.
    rig.progress.append(paid.model_dump(mode="json"))
    rig.next_attempt()
    started = time.monotonic()

    again = await rig.call(request)

    assert (await rig.standin.stats())["requests"] == 1, "the verdict was paid for once"
    assert paid.reply is not None and again.raw_key == paid.reply.generated.raw_key
    assert again.usage == paid.usage and time.monotonic() - started < 5


async def test_the_default_judge_model_thinks_so_it_is_offered_the_tool_and_gets_its_thinking_budget(rig: Rig) -> None:
    # The API refuses a forced tool choice beside thinking: a thinking judge is asked to call it.
    rig.settings = rig.settings.model_copy(update={"judge_model": Settings().judge_model})
    assert traits_of(rig.settings.judge_model).thinking != "none", "the default judge model thinks"
    rig.claude = ClaudeActivities(rig.claude._client, rig.storage, TurnAtOnce(), rig.settings, PriceTable.load())  # type: ignore[arg-type]
    job_id, conversation_id, user = await rig.conversation("\njudge-score: 3")
    request = await rig.prepare(job_id, conversation_id, user)
    await rig.standin.configure(script=["out_of_range"])

    first = await rig.call(request)
    with pytest.raises(ApplicationError) as raised:
        await rig.judge.record_verdict(RecordVerdictInput(job_id=job_id, request=request, judgings=[first]))
    repair = RepairRequest(rejected_raw_key=first.raw_key, problem=str(raised.value.details[0]))
    second = await rig.call(request.model_copy(update={"repair": repair}))
    verdict = await rig.judge.record_verdict(RecordVerdictInput(job_id=job_id, request=request, judgings=[first, second]))

    assert rig.sent[0]["tool_choice"] == {"type": "auto"}
    assert rig.sent[0]["max_tokens"] == rig.settings.judge_max_tokens + traits_of(rig.settings.judge_model).max_tokens_reserve
    assert first.usage.output_tokens > 1000, "its thinking is paid for as output"
    # The repair sends the thinking back with the rejected call, as the API requires.
    assert [b["type"] for b in rig.sent[1]["messages"][1]["content"]] == ["thinking", "tool_use"]
    assert verdict.overall == 3.0
