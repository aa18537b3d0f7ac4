"""The Claude call as one activity: the real SDK over a real socket to an in-process stand-in,
run in Temporal's ActivityEnvironment (heartbeats, cancellation and attempt numbers as a worker
gives them), with storage kept in memory. Plus the pure parts: failure classification, the
rate-limit gate and the price table."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest
import sqlalchemy
from anthropic.types import CacheCreation, Usage
from botocore.exceptions import EndpointConnectionError
from pydantic import SecretStr
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import claude
from activities.claude import (
    ClaudeActivities,
    RateLimitGate,
    RateLimitWaitTooLong,
    backoff_delay,
    classify_failure,
    refusal_reason,
    refused_failure,
)
from activities.claude_pacing import TurnTooFar
from activities.claude_requests import EMPTY_REPLY_NOTE, REPAIR_INSTRUCTION, priced_usage
from activities.conversations import ConversationActivities
from brightrun.claude_client import STANDIN_HEADER, answered_by
from brightrun.model_traits import TRAITS_FILE
from brightrun.pricing import DEFAULT_PRICES_FILE, ModelPrice, PriceTable
from brightrun.settings import CLAUDE_STORAGE_MARGIN_S, Settings
from brightrun.storage import raw_response_key
from devtools.standin import start_standin
from devtools.standin_control import StandinControl
from models.enums import ClaudeProvider, Tier
from models.messages import (
    CallProgress,
    ClaudeCallPlan,
    GenerateInput,
    RefusalDetails,
    RepairRequest,
    ResolvedPrompt,
    StoreConversationInput,
    TokenUsage,
)
from tests.fakes import MemoryStorage
from tests.helpers import eventually
from workflows.config import claude_step

PROMPT_USER = (
    "Write one conversation.\nPersona: David Chen\nEmotional arc: Anxiety -> Confidence\n"
    "Training topic: Paying Down Debt\nTier: scenario"
)
# 1,245 tokens at four characters a token: above claude-sonnet-4-6's minimum cacheable prefix (1,024).
SYSTEM = "You write training conversations for fine-tuning. Return only one JSON object. " * 60
PROMPT_KEY = "requests/test-user/a-conversation_prompt.json"  # where the template step stored it


@dataclasses.dataclass
class Rig:
    client: anthropic.AsyncAnthropic
    activities: ClaudeActivities
    storage: MemoryStorage
    standin: StandinControl
    settings: Settings
    sent: list[dict[str, Any]]  # the JSON body of every request the SDK sent
    env: ActivityEnvironment
    heartbeats: list[float]
    # The details of each heartbeat as the data converter would send them to the next attempt.
    progress: list[dict[str, Any]]

    async def generate(self, request: GenerateInput) -> Any:
        return await self.env.run(self.activities.generate_conversation, request)

    def use_pacer(self, pacer: object) -> None:
        """The worker's calls take their turns from this pacer instead."""
        self.activities = ClaudeActivities(self.client, self.storage, pacer, self.settings, PriceTable.load())  # type: ignore[arg-type]

    def schedule_as(self, plan: ClaudeCallPlan) -> None:
        """The retry policy the item workflow gives its call (workflows/config.py)."""
        policy = claude_step(plan, Tier.SCENARIO, Priority())["retry_policy"]
        self.env.info = dataclasses.replace(self.env.info, retry_policy=policy)

    def next_attempt(self) -> None:
        """As Temporal starts the next attempt: a fresh deadline and the last heartbeat's details."""
        self.env.info = dataclasses.replace(
            self.env.info, attempt=self.env.info.attempt + 1, started_time=datetime.now(UTC),
            heartbeat_details=self.progress[-1:],
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    runner, port = await start_standin(port=0)
    base_url = f"http://127.0.0.1:{port}"
    sent: list[dict[str, Any]] = []

    async def keep_body(request: httpx2.Request) -> None:
        sent.append(json.loads(request.content))

    settings = Settings(anthropic_base_url=base_url, anthropic_api_key=None, claude_rate_limit_max_wait_s=5)
    http = httpx2.AsyncClient(event_hooks={"request": [keep_body]})
    async with anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0, http_client=http) as client:
        storage = MemoryStorage()
        await storage.put_json(storage.conversation_bucket, PROMPT_KEY, {"system": SYSTEM, "user": PROMPT_USER})
        env = ActivityEnvironment()
        heartbeats: list[float] = []
        progress: list[dict[str, Any]] = []

        def on_heartbeat(*details: Any) -> None:
            heartbeats.append(time.monotonic())
            progress.append(details[0].model_dump(mode="json"))

        env.on_heartbeat = on_heartbeat
        env.info = dataclasses.replace(
            env.info, heartbeat_timeout=timedelta(seconds=20), retry_policy=RetryPolicy(maximum_attempts=4),
            started_time=datetime.now(UTC),
            start_to_close_timeout=timedelta(seconds=settings.claude_attempt_timeout_s(Tier.SCENARIO)),
        )
        activities = ClaudeActivities(client, storage, TurnAtOnce(), settings, PriceTable.load())  # type: ignore[arg-type]
        yield Rig(client, activities, storage, StandinControl(base_url), settings, sent, env, heartbeats, progress)
    await runner.cleanup()


class TurnAtOnce:
    """Every call's turn is now: these tests are about the call (pacing: tests/test_claude_faults.py)."""

    async def turn_for_call(self, max_wait_s: float) -> float:
        return 0.0


def generate_input(repair: RepairRequest | None = None, max_attempts: int | None = None) -> GenerateInput:
    return GenerateInput(
        job_id=uuid.uuid4(),
        item_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        user_id="test-user",
        tier=Tier.SCENARIO,
        prompt=ResolvedPrompt(
            template_id=uuid.uuid4(), template_version=1, text_key=PROMPT_KEY,
            persona_name="David Chen", topic_name="Paying Down Debt",
        ),
        repair=repair,
        max_attempts=max_attempts,
    )


# --- through the stand-in -------------------------------------------------------------------


async def test_a_call_stores_the_raw_answer_and_returns_a_reference_usage_and_cost(rig: Rig) -> None:
    request = generate_input()

    generated = await rig.generate(request)

    assert generated.raw_key == raw_response_key("test-user", request.conversation_id)
    raw = rig.storage.objects[generated.raw_key]
    assert raw["message"]["stop_reason"] == "end_turn" == generated.stop_reason
    assert raw["max_tokens"] == rig.settings.claude_max_tokens(Tier.SCENARIO) == rig.sent[0]["max_tokens"]
    assert rig.sent[0]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert rig.sent[0]["stream"] is True
    # The prompt's text is read where the template step stored it.
    assert rig.sent[0]["system"][0]["text"] == SYSTEM and rig.sent[0]["messages"][0]["content"] == PROMPT_USER
    usage = generated.usage
    assert usage.output_tokens > 0 and usage.cache_creation_input_tokens > 0
    assert usage.cost_usd == pytest.approx(PriceTable.load().price_of(generated.model).cost_usd(usage)) and usage.cost_usd > 0
    assert generated.rate_limit["anthropic-ratelimit-requests-limit"] == "4000"
    assert raw["rate_limit"] == generated.rate_limit
    assert (await rig.standin.stats())["log"][0]["item"] == str(request.item_id)


async def test_a_reply_from_the_stand_in_is_the_stand_ins_even_with_an_api_key_set(rig: Rig) -> None:
    # A dummy key (in .env, or CI's) with ANTHROPIC_BASE_URL at the stand-in: who answered decides.
    rig.settings = rig.settings.model_copy(update={"anthropic_api_key": SecretStr("sk-ant-dummy")})
    rig.use_pacer(TurnAtOnce())

    generated = await rig.generate(generate_input())

    assert (generated.provider, generated.provider_host) == (ClaudeProvider.OFFLINE_STANDIN, "127.0.0.1")
    assert rig.storage.objects[generated.raw_key]["generated_by"] == "offline-standin"


async def test_the_second_call_reads_the_system_prompt_from_the_cache(rig: Rig) -> None:
    first = await rig.generate(generate_input())
    second = await rig.generate(generate_input())

    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cost_usd < first.usage.cost_usd


async def test_heartbeats_go_on_while_no_byte_arrives(rig: Rig) -> None:
    rig.env.info = dataclasses.replace(rig.env.info, heartbeat_timeout=timedelta(seconds=0.6))
    await rig.standin.configure(first_token_ms=1500)

    started = time.monotonic()
    await rig.generate(generate_input())

    assert time.monotonic() - started >= 1.5
    beats = [started, *rig.heartbeats]
    assert len(rig.heartbeats) >= 5
    assert max(later - earlier for earlier, later in itertools.pairwise(beats)) < 0.6, "a heartbeat timeout would have fired"


async def test_a_cancellation_ends_a_silent_call_at_once(rig: Rig) -> None:
    await rig.standin.configure(first_token_ms=30_000)
    call = asyncio.create_task(rig.generate(generate_input()))
    await eventually(lambda: _requests_at_least(rig.standin, 1), "the request reached the stand-in")

    started = time.monotonic()
    rig.env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert time.monotonic() - started < 2
    assert rig.storage.objects.keys() == {PROMPT_KEY}, "nothing is stored for a cancelled call"


async def _requests_at_least(standin: StandinControl, count: int) -> bool:
    return (await standin.stats())["requests"] >= count


async def test_a_429_says_when_to_retry_and_holds_back_the_next_call_until_the_budget_resets(rig: Rig) -> None:
    await rig.standin.configure(script=["429", "ok"], retry_after_s=2)

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())
    await rig.generate(generate_input())  # on the same worker: the gate read the empty budget

    failure = raised.value
    assert (failure.type, failure.non_retryable) == ("claude_429", False)
    assert failure.next_retry_delay is not None
    assert failure.next_retry_delay >= timedelta(seconds=2)
    first, second = (await rig.standin.stats())["log"]
    assert second["at"] - first["at"] >= 2.0


async def test_a_rate_limit_wait_longer_than_the_attempt_has_left_is_a_retry_after_the_wait(rig: Rig) -> None:
    await rig.standin.configure(script=["429"], retry_after_s=30)
    with pytest.raises(ApplicationError):
        await rig.generate(generate_input())
    # One second of this attempt is left for waiting; the gate holds calls for the 5 s it may.
    call_s = rig.settings.claude_timeout_s(Tier.SCENARIO) + CLAUDE_STORAGE_MARGIN_S
    rig.next_attempt()
    rig.env.info = dataclasses.replace(rig.env.info, start_to_close_timeout=timedelta(seconds=call_s + 1))

    started = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())

    assert time.monotonic() - started < 1, "the attempt did not sit in the gate"
    failure = raised.value
    assert (failure.type, failure.non_retryable) == ("claude_rate_limit_wait", False)
    assert failure.next_retry_delay is not None
    assert failure.next_retry_delay >= timedelta(seconds=rig.settings.claude_rate_limit_max_wait_s - 1)
    assert failure.message.startswith("rate limit budget low: waiting for the budget's reset would outlast this attempt")
    assert (await rig.standin.stats())["requests"] == 1


async def test_a_repair_sends_the_rejected_reply_and_the_problem_and_keeps_both_raw_answers(rig: Rig) -> None:
    first = await rig.generate(generate_input())
    problem = "the reply is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    request = generate_input(RepairRequest(rejected_raw_key=first.raw_key, problem=problem))
    request = request.model_copy(update={"conversation_id": uuid.UUID(first.raw_key.split("/")[-1].split("_")[0])})

    repaired = await rig.generate(request)

    rejected_text = rig.storage.objects[first.raw_key]["message"]["content"][0]["text"]
    assert rig.sent[-1]["messages"] == [
        {"role": "user", "content": PROMPT_USER},
        {"role": "assistant", "content": rejected_text},
        {"role": "user", "content": REPAIR_INSTRUCTION.format(problem=problem)},
    ]
    assert repaired.raw_key == first.raw_key.replace("_raw.json", "_raw_repair.json")
    assert rig.storage.objects[repaired.raw_key]["repair_of"] == first.raw_key
    assert first.raw_key in rig.storage.objects


async def test_a_repair_of_a_reply_without_text_sends_no_empty_assistant_turn(rig: Rig) -> None:
    first = await rig.generate(generate_input())
    rig.storage.objects[first.raw_key]["message"]["content"] = [{"type": "thinking", "thinking": "Hm.", "signature": "s"}]
    problem = "the reply is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    request = generate_input(RepairRequest(rejected_raw_key=first.raw_key, problem=problem))

    await rig.generate(request)

    assert rig.sent[-1]["messages"] == [
        {"role": "user", "content": f"{PROMPT_USER}\n\n{EMPTY_REPLY_NOTE}{REPAIR_INSTRUCTION.format(problem=problem)}"},
    ]


async def test_a_model_that_always_thinks_writes_the_whole_conversation_within_its_budget(rig: Rig) -> None:
    settings = rig.settings.model_copy(update={"claude_model": "claude-opus-5-5"})
    activities = ClaudeActivities(rig.client, rig.storage, TurnAtOnce(), settings, PriceTable.load())  # type: ignore[arg-type]
    request = generate_input().model_copy(update={"tier": Tier.TEMPLATE})

    generated = await rig.env.run(activities.generate_conversation, request)

    assert rig.sent[-1]["max_tokens"] == settings.claude_max_tokens_by_tier[Tier.TEMPLATE] + 16_000
    message = rig.storage.objects[generated.raw_key]["message"]
    assert generated.stop_reason == "end_turn" and [b["type"] for b in message["content"]] == ["thinking", "text"]
    stored = await ActivityEnvironment().run(
        ConversationActivities(rig.storage, quality_min_score=0.5).store_conversation,  # type: ignore[arg-type]
        StoreConversationInput(
            conversation_id=request.conversation_id, user_id=request.user_id, raw_key=generated.raw_key,
            persona="David Chen", training_topic="Paying Down Debt",
        ),
    )
    assert stored.turn_count >= 6


def test_a_thinking_model_gets_its_thinking_reserve_on_top_of_every_tiers_budget() -> None:
    plain, thinking = Settings(claude_model="claude-sonnet-4-6"), Settings(claude_model="claude-opus-5-5-20261001")

    for tier in Tier:
        assert plain.claude_max_tokens(tier) == plain.claude_max_tokens_by_tier[tier]
        assert thinking.claude_max_tokens(tier) == thinking.claude_max_tokens_by_tier[tier] + 16_000
        assert thinking.claude_timeout_s(tier) > plain.claude_timeout_s(tier)


async def test_the_last_allowed_attempt_fails_for_good_with_the_last_error(rig: Rig) -> None:
    # Three requests went out before, over however many attempts.
    rig.env.info = dataclasses.replace(
        rig.env.info, attempt=9, heartbeat_details=[CallProgress(requests_sent=3).model_dump(mode="json")]
    )
    await rig.standin.configure(script=["529"])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input(max_attempts=4))

    assert raised.value.non_retryable
    assert raised.value.message == "gave up after 4 attempts; last error: Claude API 529: Overloaded (overloaded_error)"


class TurnsTakenByOthers:
    """Other workers hold the queue's next turns: the first `refusals` takes find the next free
    turn further away than the call can wait, then a turn is free at once."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    async def turn_for_call(self, max_wait_s: float) -> float:
        if self.refusals:
            self.refusals -= 1
            raise TurnTooFar(max_wait_s + 30)
        return 0.0


async def test_waiting_for_a_turn_is_no_attempt_however_many_attempts_it_takes(rig: Rig) -> None:
    rig.use_pacer(TurnsTakenByOthers(refusals=3))
    rig.schedule_as(ClaudeCallPlan(max_attempts=2))
    request = generate_input(max_attempts=2)

    for _ in range(3):
        with pytest.raises(ApplicationError) as raised:
            await rig.generate(request)
        assert (raised.value.type, raised.value.non_retryable) == ("claude_rate_limit_wait", False)
        rig.next_attempt()
    generated = await rig.generate(request)

    assert generated.raw_key in rig.storage.objects
    assert (await rig.standin.stats())["requests"] == 1
    assert rig.env.info.retry_policy is not None and rig.env.info.retry_policy.maximum_attempts == 0, (
        "Temporal caps nothing: an attempt that only waited is not an attempt"
    )


class TurnsFromADatabaseThatIsDown:
    """The pacer's PostgreSQL refuses connections `refusals` times (a call whose slot's turn had
    gone stale asks it for one), then answers at once."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    async def turn_for_call(self, max_wait_s: float) -> float:
        if self.refusals:
            self.refusals -= 1
            refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
            raise sqlalchemy.exc.OperationalError("INSERT INTO claude_call_pacing ...", {}, refused)
        return 0.0


async def test_a_postgresql_outage_while_a_call_takes_its_turn_is_no_attempt(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claude, "OUTAGE_TRY_S", math.inf)  # each attempt gives the outage up at once
    rig.use_pacer(TurnsFromADatabaseThatIsDown(refusals=3))
    rig.schedule_as(ClaudeCallPlan(max_attempts=2))
    request = generate_input(max_attempts=2)

    for _ in range(3):
        with pytest.raises(ApplicationError) as raised:
            await rig.generate(request)
        assert (raised.value.type, raised.value.non_retryable) == ("database_unavailable", False)
        rig.next_attempt()
    generated = await rig.generate(request)

    assert generated.raw_key in rig.storage.objects
    assert (await rig.standin.stats())["requests"] == 1


async def test_an_unexpected_error_is_retried_only_as_often_as_a_request_would_be(rig: Rig) -> None:
    rig.schedule_as(ClaudeCallPlan(max_attempts=2))
    rig.storage.objects["raw/test/broken_raw.json"] = {"not": "a reply"}  # a stored reply corrupted
    request = generate_input(RepairRequest(rejected_raw_key="raw/test/broken_raw.json", problem="p"), max_attempts=2)

    with pytest.raises(KeyError):  # retried as it is: Temporal's policy has no cap
        await rig.generate(request)
    rig.next_attempt()
    with pytest.raises(ApplicationError) as raised:
        await rig.generate(request)

    assert (raised.value.type, raised.value.non_retryable) == ("claude_unexpected_error", True)
    assert raised.value.message.startswith("gave up after 2 unexpected errors; last: KeyError")
    assert (await rig.standin.stats())["requests"] == 0


async def test_a_request_counts_before_it_goes_so_an_attempt_that_timed_out_counts_it(rig: Rig) -> None:
    await rig.standin.configure(first_token_ms=30_000)
    request = generate_input(max_attempts=1)
    call = asyncio.create_task(rig.generate(request))
    await eventually(lambda: _requests_at_least(rig.standin, 1), "the request reached the stand-in")
    assert rig.progress[-1]["requests_sent"] == 1, "the heartbeat counted the request before it went"
    rig.env.cancel()  # as the attempt's timeout, or a lost worker, ends it
    with pytest.raises(asyncio.CancelledError):
        await call
    rig.env = ActivityEnvironment()
    rig.env.info = dataclasses.replace(rig.env.info, heartbeat_details=rig.progress[-1:])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(request)

    assert raised.value.non_retryable and raised.value.type == "claude_connection"
    assert raised.value.message == (
        "gave up after 1 attempts; the last got no answer within its attempt (it timed out, or its worker was lost)"
    )
    assert (await rig.standin.stats())["requests"] == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("401", "invalid x-api-key (401 authentication_error)"),
        ("402", "Your credit balance is too low to access the Anthropic API (402 billing_error)"),
        ("403", "Your API key does not have permission to use the specified resource (403 permission_error)"),
        ("429_spend_limit",
         "You have reached your organization's monthly usage limit (429 rate_limit_error, enforced_spend_limit_reached)"),
    ],
)
async def test_an_account_refusal_waits_spending_no_attempt_until_it_is_fixed(rig: Rig, fault: str, reason: str) -> None:
    await rig.standin.configure(script=[fault, fault])
    request = generate_input(max_attempts=1)
    rig.schedule_as(ClaudeCallPlan(max_attempts=1))

    refusals = []
    for _ in range(2):
        with pytest.raises(ApplicationError) as raised:
            await rig.generate(request)
        refusals.append(raised.value)
        rig.next_attempt()
    generated = await rig.generate(request)  # the operator fixed the key or the limit

    assert generated.raw_key in rig.storage.objects
    assert (await rig.standin.stats())["requests"] == 3
    for refusal in refusals:
        assert (refusal.type, refusal.non_retryable) == ("anthropic_refused", False)
        assert refusal.message == f"Anthropic refused: {reason}; the item waits until the key or limit is fixed"
        assert refusal.next_retry_delay is not None and refusal.next_retry_delay <= timedelta(seconds=60)
    first, second = (RefusalDetails.model_validate(refusal.details[0]) for refusal in refusals)
    assert first.reason == reason and first.since == second.since is not None, "refused since the first one"
    assert CallProgress.model_validate(rig.progress[-1]).refusals == 2


class TurnIn:
    """The queue's next free turn is `seconds` away on the database's clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def turn_for_call(self, max_wait_s: float) -> float:
        if max_wait_s < self.seconds:
            raise TurnTooFar(self.seconds)
        return self.seconds


async def test_a_worker_clock_ahead_of_temporals_leaves_the_call_its_wait_for_a_turn(rig: Rig) -> None:
    rig.use_pacer(TurnIn(seconds=1))
    # The Temporal server started the attempt "ten minutes ago" by the worker's clock, which is
    # ten minutes ahead of the server's; the attempt has in fact just begun.
    rig.env.info = dataclasses.replace(rig.env.info, started_time=datetime.now(UTC) - timedelta(minutes=10))

    generated = await rig.generate(generate_input())

    assert generated.raw_key in rig.storage.objects
    assert (await rig.standin.stats())["requests"] == 1


async def test_a_bad_request_is_never_retried(rig: Rig) -> None:
    await rig.standin.configure(script=["400"])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())

    assert (raised.value.type, raised.value.non_retryable) == ("claude_400", True)
    assert raised.value.message == "Claude API 400: messages: prompt is too long for this model (invalid_request_error)"


@pytest.mark.parametrize(
    ("fault", "retried", "said"),
    [
        ("404", False, "Claude API 404: model: not found (not_found_error)"),
        ("413", False, "Claude API 413: <html><head><title>413 Request Entity Too Large</title>"),
        ("504", True, "Claude API 504: Request timed out (timeout_error)"),
    ],
)
async def test_what_the_api_answers_besides_is_retried_or_not_by_its_status(
    rig: Rig, fault: str, retried: bool, said: str
) -> None:
    await rig.standin.configure(script=[fault])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())

    assert (raised.value.type, raised.value.non_retryable) == (f"claude_{fault}", not retried)
    assert raised.value.message.startswith(said)


async def test_an_overload_inside_the_stream_is_retried_like_a_529(rig: Rig) -> None:
    await rig.standin.configure(script=["midstream_overloaded"])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())

    assert (raised.value.type, raised.value.non_retryable) == ("claude_529", False)
    assert raised.value.message == "Claude API error mid-stream (after HTTP 200): Overloaded (overloaded_error)"
    assert raised.value.next_retry_delay is not None
    assert raised.value.next_retry_delay > timedelta(0)
    assert rig.storage.objects.keys() == {PROMPT_KEY}, "no reply is stored"


async def test_a_connection_dropped_inside_the_stream_is_retried(rig: Rig) -> None:
    await rig.standin.configure(script=["midstream_drop"])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())

    assert (raised.value.type, raised.value.non_retryable) == ("claude_connection", False)
    assert raised.value.message == (
        "Claude API connection failed: RemoteProtocolError: "
        "peer closed connection without sending complete message body (incomplete chunked read)"
    )


class StorageDown:
    """The rig's storage, unreachable until `back()`: puts fail as boto3 fails without S3."""

    def __init__(self, storage: MemoryStorage, failures: int | None = None, reads_fail: bool = True) -> None:
        self._storage, self.failures, self.refused, self.reads_fail = storage, failures, 0, reads_fail
        self.conversation_bucket = storage.conversation_bucket

    def back(self) -> None:
        self.failures = 0

    async def put_json(self, bucket: str, key: str, document: object, read_back_soon: bool = False) -> str:
        if self.failures is None or self.refused < self.failures:
            self.refused += 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/conversation-files")
        return await self._storage.put_json(bucket, key, document)

    async def get_bytes(self, bucket: str, key: str, digest: str | None = None) -> bytes:
        if self.reads_fail and (self.failures is None or self.refused < self.failures):
            self.refused += 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/conversation-files")
        return await self._storage.get_bytes(bucket, key)


async def test_a_paid_reply_is_stored_through_a_storage_outage_within_the_attempt(rig: Rig) -> None:
    storage = StorageDown(rig.storage, failures=2)
    rig.activities._storage = storage  # type: ignore[assignment]
    request = generate_input()

    generated = await rig.generate(request)

    assert storage.refused == 2 and (await rig.standin.stats())["requests"] == 1
    assert rig.storage.objects[generated.raw_key]["message"]["usage"]["output_tokens"] == generated.usage.output_tokens
    kept = CallProgress.model_validate(rig.progress[-1]).reply
    assert kept is not None and kept.generated.raw_key == generated.raw_key


async def test_the_next_attempt_stores_the_reply_an_attempt_paid_for_without_calling_again(rig: Rig) -> None:
    storage = StorageDown(rig.storage, reads_fail=False)  # down once the prompt was read
    rig.activities._storage = storage  # type: ignore[assignment]
    # Too little time left for a second upload: the attempt ends, keeping the reply.
    rig.env.info = dataclasses.replace(rig.env.info, start_to_close_timeout=timedelta(seconds=5))
    request = generate_input()

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(request)
    paid = CallProgress.model_validate(rig.progress[-1])
    storage.back()
    rig.next_attempt()
    generated = await rig.generate(request)

    failure = raised.value
    assert (failure.type, failure.non_retryable) == ("storage_unavailable", False)
    assert failure.message.startswith("S3 storage unavailable: Could not connect to the endpoint URL")
    assert failure.message.endswith("; the paid reply is kept for the next attempt")
    assert failure.details[0].part == "S3 storage", "starter.py status says what the item waits for"
    assert failure.details[-1] == paid.usage and paid.usage.cost_usd > 0
    assert (await rig.standin.stats())["requests"] == 1, "the second attempt did not call Claude"
    assert paid.reply is not None
    assert generated.raw_key == paid.reply.generated.raw_key == raw_response_key("test-user", request.conversation_id)
    assert rig.storage.objects[generated.raw_key] == paid.reply.document
    assert (generated.usage, generated.attempt) == (paid.usage, 2)


async def test_a_repair_reads_the_rejected_reply_through_a_storage_outage(rig: Rig) -> None:
    first = await rig.generate(generate_input())
    rig.activities._storage = storage = StorageDown(rig.storage, failures=1)  # type: ignore[assignment]
    request = generate_input(RepairRequest(rejected_raw_key=first.raw_key, problem="not JSON"))

    repaired = await rig.generate(request)

    assert storage.refused == 1 and rig.sent[-1]["messages"][1]["role"] == "assistant"
    assert repaired.raw_key in rig.storage.objects


async def test_a_second_attempt_counts_the_tokens_the_first_spent_before_it_broke(rig: Rig) -> None:
    await rig.standin.configure(script=["midstream_drop", "ok"])

    with pytest.raises(ApplicationError) as raised:
        await rig.generate(generate_input())
    spent = TokenUsage.model_validate(raised.value.details[-1])
    rig.next_attempt()
    generated = await rig.generate(generate_input())

    assert spent.input_tokens > 0 and spent.cache_creation_input_tokens > 0 and spent.cost_usd > 0
    answered = rig.storage.objects[generated.raw_key]["message"]["usage"]
    assert generated.usage.input_tokens == spent.input_tokens + answered["input_tokens"]
    assert generated.usage.cost_usd > spent.cost_usd


# --- who answered ---------------------------------------------------------------------------


def test_a_response_without_the_stand_ins_mark_is_anthropics_at_the_host_the_request_went_to() -> None:
    request = httpx2.Request("POST", "https://claude-proxy.example.com/v1/messages")

    assert answered_by(httpx2.Response(200, request=request)) == (ClaudeProvider.ANTHROPIC, "claude-proxy.example.com")
    assert answered_by(httpx2.Response(200, headers={STANDIN_HEADER: "1"}, request=request)) == (
        ClaudeProvider.OFFLINE_STANDIN, "claude-proxy.example.com",
    )


# --- failure classification -----------------------------------------------------------------

SETTINGS = Settings(claude_retry_base_s=2, claude_retry_cap_s=60)


def status_error(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    response = httpx2.Response(
        status, headers=headers or {}, request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    )
    return anthropic.APIStatusError(message, response=response, body={"type": "error", "error": {"message": message}})


def stream_error(error_type: str, message: str = "boom") -> anthropic.APIStatusError:
    """An error event inside a stream that had answered 200, as the SDK raises it."""
    response = httpx2.Response(200, request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"))
    return anthropic.APIStatusError(
        message, response=response, body={"type": "error", "error": {"type": error_type, "message": message}}
    )


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("overloaded_error", 529), ("api_error", 500), ("rate_limit_error", 429), ("timeout_error", 504),
     ("some_new_error", 500)],
)
def test_a_transient_error_inside_a_stream_is_retried_by_its_type(error_type: str, status: int) -> None:
    failure = classify_failure(stream_error(error_type), attempt=1, max_attempts=6, settings=SETTINGS)

    assert (failure.type, failure.non_retryable) == (f"claude_{status}", False)
    assert failure.message == f"Claude API error mid-stream (after HTTP 200): boom ({error_type})"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("invalid_request_error", 400), ("authentication_error", 401), ("permission_error", 403),
     ("request_too_large", 413)],
)
def test_a_permanent_error_inside_a_stream_is_never_retried(error_type: str, status: int) -> None:
    failure = classify_failure(stream_error(error_type, "prompt is too long"), attempt=1, max_attempts=6, settings=SETTINGS)

    assert (failure.type, failure.non_retryable) == (f"claude_{status}", True)
    assert failure.message == f"Claude API error mid-stream (after HTTP 200): prompt is too long ({error_type})"


@pytest.mark.parametrize(
    "error",
    [httpx2.RemoteProtocolError("peer closed connection without sending complete message body (incomplete chunked read)"),
     httpx2.ReadError("[Errno 104] Connection reset by peer"), httpx2.ReadTimeout("timed out")],
)
def test_a_transport_error_inside_a_stream_is_retried_with_what_broke(error: httpx2.TransportError) -> None:
    failure = classify_failure(error, attempt=1, max_attempts=6, settings=SETTINGS)

    assert (failure.type, failure.non_retryable) == ("claude_connection", False)
    assert failure.message == f"Claude API connection failed: {error.__class__.__name__}: {error}"


def test_a_connection_error_names_its_cause() -> None:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    try:
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused")
        except httpx2.ConnectError as cause:
            raise anthropic.APIConnectionError(request=request) from cause
    except anthropic.APIConnectionError as exc:
        failure = classify_failure(exc, attempt=1, max_attempts=6, settings=SETTINGS)

    assert failure.message == "Claude API connection failed: ConnectError: [Errno 111] Connection refused"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_requests_that_can_never_work_are_not_retried(status: int) -> None:
    failure = classify_failure(status_error(status), attempt=1, max_attempts=6, settings=SETTINGS)

    assert (failure.type, failure.non_retryable) == (f"claude_{status}", True)


def refused(error_class: type[anthropic.APIStatusError], status: int, error_type: str, code: str | None = None,
            headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    response = httpx2.Response(
        status, headers=headers or {}, request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    )
    error: dict[str, Any] = {"type": error_type, "message": "no"} | ({"details": {"error_code": code}} if code else {})
    return error_class("no", response=response, body={"type": "error", "error": error})


@pytest.mark.parametrize(
    "exc",
    [
        refused(anthropic.AuthenticationError, 401, "authentication_error"),
        refused(anthropic.PaymentRequiredError, 402, "billing_error"),
        refused(anthropic.PermissionDeniedError, 403, "permission_error"),
        refused(anthropic.EnforcedSpendLimitReachedError, 429, "rate_limit_error", "enforced_spend_limit_reached"),
        refused(anthropic.ContractSpendLimitReachedError, 429, "rate_limit_error", "contract_spend_limit_reached"),
        refused(anthropic.OrganizationOnHoldError, 400, "invalid_request_error", "organization_on_hold"),
    ],
)
def test_a_refusal_of_the_account_is_told_by_type_and_error_code(exc: anthropic.APIStatusError) -> None:
    assert refusal_reason(exc) is not None


@pytest.mark.parametrize(
    "exc",
    [
        # A rate limit that mentions spending is still a rate limit: the words decide nothing.
        status_error(429, "You have reached your specified workspace API usage limits", {"retry-after": "30"}),
        refused(anthropic.RampLimitExceededError, 429, "rate_limit_error", "ramp_limit_exceeded"),
        status_error(400, "credit balance"),
        status_error(404),
    ],
)
def test_no_other_error_is_a_refusal_of_the_account(exc: anthropic.APIStatusError) -> None:
    assert refusal_reason(exc) is None


def test_a_refusal_backs_off_to_about_a_minute_and_waits_at_least_its_retry_after() -> None:
    exc = refused(anthropic.AuthenticationError, 401, "authentication_error")
    first = refused_failure(exc, "no", CallProgress(refusals=1))
    later = refused_failure(exc, "no", CallProgress(refusals=12))
    told = refused_failure(
        refused(anthropic.PermissionDeniedError, 403, "permission_error", headers={"retry-after-ms": "90500"}),
        "no", CallProgress(refusals=1),
    )

    assert first.next_retry_delay is not None and timedelta(seconds=2.5) <= first.next_retry_delay <= timedelta(seconds=5)
    assert later.next_retry_delay is not None and timedelta(seconds=30) <= later.next_retry_delay <= timedelta(seconds=60)
    assert told.next_retry_delay is not None and told.next_retry_delay >= timedelta(seconds=90.5)


def test_retry_after_ms_says_the_wait_more_exactly_than_retry_after() -> None:
    exc = status_error(429, headers={"retry-after": "1", "retry-after-ms": "17500"})

    failure = classify_failure(exc, attempt=1, max_attempts=6, settings=SETTINGS)

    assert failure.next_retry_delay is not None and failure.next_retry_delay >= timedelta(seconds=17.5)


def test_a_rate_limited_429_retries_no_earlier_than_retry_after() -> None:
    failure = classify_failure(status_error(429, headers={"retry-after": "17"}), attempt=1, max_attempts=6, settings=SETTINGS)

    assert failure.next_retry_delay is not None
    assert not failure.non_retryable and failure.next_retry_delay >= timedelta(seconds=17)


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 529])
@pytest.mark.parametrize("attempt", [1, 3, 5])
def test_overload_and_server_errors_back_off_exponentially_with_jitter(status: int, attempt: int) -> None:
    failure = classify_failure(status_error(status), attempt=attempt, max_attempts=6, settings=SETTINGS)

    ceiling = min(60, 2 * 2 ** (attempt - 1))
    assert not failure.non_retryable
    assert failure.next_retry_delay is not None
    assert timedelta(seconds=ceiling / 2) <= failure.next_retry_delay <= timedelta(seconds=ceiling)


def test_a_rate_limit_wait_past_the_deadline_retries_after_the_wait_and_never_gives_up() -> None:
    wait = RateLimitWaitTooLong(40, "the budget's reset")

    for sent in (0, 2, 6):
        retried = classify_failure(wait, attempt=sent, max_attempts=6, settings=SETTINGS)

        assert (retried.type, retried.non_retryable) == ("claude_rate_limit_wait", False)
        assert retried.next_retry_delay is not None
        assert retried.next_retry_delay >= timedelta(seconds=40)


def test_jitter_spreads_the_retries_of_a_burst() -> None:
    assert len({backoff_delay(3, 2, 60) for _ in range(20)}) > 1


@pytest.mark.parametrize("error", [anthropic.APIConnectionError, anthropic.APITimeoutError])
def test_connection_errors_and_timeouts_are_retried(error: type[anthropic.APIConnectionError]) -> None:
    exc = error(request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"))

    failure = classify_failure(exc, attempt=1, max_attempts=6, settings=SETTINGS)

    assert (failure.type, failure.non_retryable) == ("claude_connection", False)


def test_a_permanent_error_on_the_last_attempt_keeps_its_own_message() -> None:
    failure = classify_failure(status_error(400, "bad"), attempt=6, max_attempts=6, settings=SETTINGS)

    assert failure.message == "Claude API 400: bad (error)"


# --- the rate-limit gate --------------------------------------------------------------------

NOW = 1_800_000_000.0


def budget(name: str, limit: int, remaining: int, reset_in_s: float) -> dict[str, str]:
    reset = datetime.fromtimestamp(NOW + reset_in_s, UTC).isoformat().replace("+00:00", "Z")
    prefix = f"anthropic-ratelimit-{name}"
    return {f"{prefix}-limit": str(limit), f"{prefix}-remaining": str(remaining), f"{prefix}-reset": reset}


@pytest.mark.parametrize("name", RateLimitGate.BUDGETS)
def test_a_low_budget_holds_the_next_call_until_its_reset(name: str) -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)

    gate.observe(budget(name, limit=1000, remaining=10, reset_in_s=12))

    assert gate.pause_s() == pytest.approx(12)


async def test_calls_started_since_the_last_answer_spend_the_request_budget() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)
    gate.observe(budget("requests", limit=100, remaining=8, reset_in_s=10))  # 3 above the watermark's 5

    async with contextlib.AsyncExitStack() as calls:
        for _ in range(3):
            assert not gate.low
            await calls.enter_async_context(gate.admitted())

        assert gate.low and gate.pause_s() == pytest.approx(10)


async def test_an_answer_counts_the_calls_started_after_its_own_against_the_budget() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)
    async with contextlib.AsyncExitStack() as calls:
        indexes = [await calls.enter_async_context(gate.admitted()) for _ in range(5)]

        # The first call's answer, seconds later: 8 left when it arrived, 3 above the watermark,
        # and the 4 calls started since have spent them.
        gate.observe(budget("requests", limit=100, remaining=8, reset_in_s=10), indexes[0])
        assert gate.low

        # An answer older than one already seen tells nothing new.
        gate.observe(budget("requests", limit=100, remaining=5, reset_in_s=10), indexes[4])
        gate.observe(budget("requests", limit=100, remaining=90, reset_in_s=10), indexes[1])
        assert gate.low and gate.pause_s() == pytest.approx(10)


async def test_a_call_that_could_not_start_in_time_is_refused_at_once() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)
    gate.observe(budget("requests", limit=100, remaining=0, reset_in_s=30))

    with pytest.raises(RateLimitWaitTooLong) as raised:
        async with gate.admitted(start_by=NOW + 10):
            pytest.fail("the call must not start")

    assert raised.value.wait_s == pytest.approx(30)


async def test_a_call_with_no_time_to_wait_still_goes_when_it_need_not_wait() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)
    gate.observe(budget("requests", limit=100, remaining=0, reset_in_s=-1))  # low, its reset passed

    async with gate.admitted(start_by=NOW - 1):
        assert gate.low


async def test_a_call_queued_behind_a_held_one_gives_up_its_turn_at_its_deadline() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60)
    gate.observe({"retry-after": "0.1"})  # calls go one at a time
    first_in, first_answered = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with gate.admitted():
            first_in.set()
            await first_answered.wait()

    holder = asyncio.create_task(first())
    await first_in.wait()
    started = time.monotonic()
    with pytest.raises(RateLimitWaitTooLong, match="its turn among the held calls"):
        async with gate.admitted(start_by=time.time() + 0.3):
            pytest.fail("the call must not start")

    assert 0.25 <= time.monotonic() - started < 2
    first_answered.set()
    await holder


def test_a_healthy_budget_holds_nothing() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)

    gate.observe(budget("requests", limit=1000, remaining=51, reset_in_s=12) | budget("tokens", 400_000, 200_000, 5))

    assert gate.pause_s() == 0


def test_the_wait_is_capped_and_ends_when_the_reset_has_passed() -> None:
    clock = [NOW]
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=20, clock=lambda: clock[0])
    gate.observe(budget("tokens", limit=1000, remaining=0, reset_in_s=45))

    assert gate.pause_s() == 20
    clock[0] += 46
    assert gate.pause_s() == 0


async def test_while_a_budget_is_low_calls_go_one_at_a_time_until_an_answer_shows_it_refilled() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)
    gate.observe(budget("requests", limit=50, remaining=1, reset_in_s=-1))  # low, its reset already passed
    inside: list[str] = []
    answer = {name: asyncio.Event() for name in ("a", "b", "c")}

    async def call(name: str, headers: dict[str, str]) -> None:
        async with gate.admitted():
            inside.append(name)
            await answer[name].wait()
            gate.observe(headers)

    calls = [
        asyncio.create_task(call("a", budget("requests", limit=50, remaining=0, reset_in_s=-1))),
        asyncio.create_task(call("b", budget("requests", limit=50, remaining=40, reset_in_s=-1))),
        asyncio.create_task(call("c", {})),
    ]
    await eventually(lambda: inside == ["a"], "the first call is in")
    assert not gate.pause_s() and gate.low
    answer["a"].set()
    await eventually(lambda: inside == ["a", "b"], "the second call went after the first's answer")
    for _ in range(20):  # every ready task runs: the third could get in now if it were allowed
        await asyncio.sleep(0)
    assert inside == ["a", "b"], "the third waits for the second's answer while the budget is low"
    answer["b"].set()
    await eventually(lambda: inside == ["a", "b", "c"], "the refilled budget let the third call in")
    answer["c"].set()
    await asyncio.gather(*calls)
    assert not gate.low


def test_an_answer_without_budget_headers_changes_nothing_and_a_refilled_budget_ends_the_wait() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)
    gate.observe(budget("tokens", limit=1000, remaining=0, reset_in_s=30))

    gate.observe({"request-id": "req_1"})
    assert gate.pause_s() == pytest.approx(30)
    gate.observe(budget("tokens", limit=1000, remaining=900, reset_in_s=30))
    assert gate.pause_s() == 0


def test_a_retry_after_holds_calls_even_when_the_reset_time_has_passed() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)

    gate.observe(budget("requests", limit=50, remaining=0, reset_in_s=-0.5) | {"retry-after": "3"})

    assert gate.low and gate.pause_s() == pytest.approx(3)


def test_headers_that_do_not_parse_are_ignored() -> None:
    gate = RateLimitGate(low_watermark=0.05, max_wait_s=60, clock=lambda: NOW)

    gate.observe({"anthropic-ratelimit-requests-limit": "lots", "anthropic-ratelimit-requests-remaining": "0",
                  "anthropic-ratelimit-requests-reset": "soon"})
    gate.observe({"anthropic-ratelimit-tokens-limit": "0", "anthropic-ratelimit-tokens-remaining": "0"})

    assert gate.pause_s() == 0


# --- prices ---------------------------------------------------------------------------------


def test_every_listed_model_has_a_complete_price_and_the_default_model_is_listed() -> None:
    raw = json.loads(DEFAULT_PRICES_FILE.read_text())
    prices = PriceTable.load()

    for model in (name for name in raw if not name.startswith("_")):
        price = prices.price_of(model)
        assert price.output > price.input > price.cache_read and price.cache_write > price.input, model
    prices.price_of(Settings.model_fields["claude_model"].default)


def test_every_priced_model_has_its_traits_beside_its_price() -> None:
    priced = {name for name in json.loads(DEFAULT_PRICES_FILE.read_text()) if not name.startswith("_")}
    described = {name for name in json.loads(TRAITS_FILE.read_text()) if not name.startswith("_")}

    assert priced == described


def test_each_price_row_has_the_documented_cache_multipliers() -> None:
    raw = json.loads(DEFAULT_PRICES_FILE.read_text())
    prices = PriceTable.load()

    assert raw["_source"].startswith("https://platform.claude.com/") and raw["_checked"]
    for model in (name for name in raw if not name.startswith("_")):
        price = prices.price_of(model)
        for rates in (price, price.long_prompt) if price.long_prompt else (price,):
            assert rates.cache_write == pytest.approx(1.25 * rates.input), model
            assert rates.cache_write_1h == pytest.approx(2 * rates.input), model
    assert prices.price_of("claude-sonnet-5-5").cache_read == 0.2  # as the pricing page lists it


def test_one_hour_cache_writes_cost_what_the_usage_breakdown_says() -> None:
    price = PriceTable.load().price_of("claude-sonnet-4-6")  # $3.75 a 5-minute write, $6 a 1-hour one
    usage = TokenUsage(cache_creation_input_tokens=4000)

    assert price.cost_usd(usage, one_hour_cache_writes=1000) == pytest.approx((3000 * 3.75 + 1000 * 6) / 1e6)
    assert price.cost_usd(usage, batch=True) == pytest.approx(4000 * 6 / 1e6 / 2)
    assert price.cost_usd(usage, batch=True, one_hour_cache_writes=0) == pytest.approx(4000 * 3.75 / 1e6 / 2)


def test_a_calls_cost_prices_its_cache_writes_by_the_answers_ttl_breakdown() -> None:
    usage = Usage(
        input_tokens=0, output_tokens=0, cache_creation_input_tokens=4000, cache_read_input_tokens=0,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=3000, ephemeral_1h_input_tokens=1000),
    )

    online = priced_usage(PriceTable.load(), Settings(), "claude-sonnet-4-6", usage)
    batch = priced_usage(PriceTable.load(), Settings(), "claude-sonnet-4-6", usage, batch=True)

    assert online.cost_usd == pytest.approx((3000 * 3.75 + 1000 * 6) / 1e6)
    assert batch.cost_usd == pytest.approx(online.cost_usd / 2)


def test_cost_adds_every_kind_of_token_at_its_rate() -> None:
    price = PriceTable.load().price_of("claude-sonnet-4-6")  # $3 in, $15 out, $3.75 cache write, $0.30 cache read
    usage = TokenUsage(input_tokens=1000, output_tokens=2000, cache_creation_input_tokens=4000, cache_read_input_tokens=10_000)

    assert price.cost_usd(usage) == pytest.approx((1000 * 3 + 2000 * 15 + 4000 * 3.75 + 10_000 * 0.3) / 1e6)


def test_a_dated_snapshot_costs_what_its_model_costs_and_an_unknown_model_is_refused() -> None:
    prices = PriceTable.load()

    assert prices.price_of("claude-sonnet-4-5-20250929") == prices.price_of("claude-sonnet-4-5")
    with pytest.raises(KeyError, match="MODEL_PRICES_FILE"):
        prices.price_of("claude-sonnet-4-7")
    with pytest.raises(KeyError):
        prices.price_of("claude-sonnet-4-6-preview")


def test_a_long_prompt_is_charged_at_the_long_prompt_rates() -> None:
    price = ModelPrice.model_validate(
        {"input": 1, "output": 2, "cache_write": 1.25, "cache_write_1h": 2, "cache_read": 0.1,
         "long_prompt": {"above_prompt_tokens": 100, "input": 10, "output": 20, "cache_write": 12.5, "cache_write_1h": 20,
                         "cache_read": 1}}
    )

    short = TokenUsage(input_tokens=50, cache_read_input_tokens=50, output_tokens=10)
    long = TokenUsage(input_tokens=50, cache_read_input_tokens=51, output_tokens=10)

    assert price.cost_usd(short) == pytest.approx((50 * 1 + 50 * 0.1 + 10 * 2) / 1e6)
    assert price.cost_usd(long) == pytest.approx((50 * 10 + 51 * 1 + 10 * 20) / 1e6)
