"""The offline Claude stand-in, driven by the real `anthropic` SDK over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic.types import TextBlock, TextDelta, ThinkingBlock

from devtools.standin import PACES, TokenBucket, start_standin
from devtools.standin_control import StandinControl
from models.conversation import ConversationDocument
from tests.helpers import eventually

MODEL = "claude-sonnet-4-6"
PROMPT = (
    "Write one conversation.\nPersona: David Chen\nPersona background: a father of two\n"
    "Emotional arc: Couple Conflict -> Alignment\nTraining topic: Essential Estate Planning\nTier: template"
)
# 1,105 tokens at four characters a token: above claude-sonnet-4-6's minimum cacheable prefix (1,024).
SYSTEM = [{"type": "text", "text": "You write training conversations. " * 130, "cache_control": {"type": "ephemeral"}}]


def request(**overrides: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 2000, "system": SYSTEM, "messages": [{"role": "user", "content": PROMPT}]} | overrides


async def create(claude: anthropic.AsyncAnthropic, **overrides: Any) -> anthropic.types.Message:
    return await claude.messages.create(**request(**overrides))


def text_of(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert isinstance(block, TextBlock), block
    return block.text


def document_of(message: anthropic.types.Message) -> ConversationDocument:
    return ConversationDocument.model_validate_json(text_of(message))


def name_free_turns(document: ConversationDocument) -> tuple[str, ...]:
    persona = document.metadata.persona
    return tuple(t.content.replace(persona, "NAME").replace(persona.split()[0], "NAME") for t in document.turns)


# --- answers --------------------------------------------------------------------------------


async def test_answers_with_a_valid_conversation_built_from_the_prompt(claude: anthropic.AsyncAnthropic) -> None:
    message = await create(claude)

    document = document_of(message)
    assert message.id.startswith("msg_standin_") and message.model == MODEL and message.stop_reason == "end_turn"
    assert document.metadata.model_dump() == {
        "persona": "David Chen",
        "emotional_arc": "Couple Conflict -> Alignment",
        "training_topic": "Essential Estate Planning",
        "tier": "template",
    }
    assert 6 <= len(document.turns) <= 10 and document.turns[-1].role == "assistant"
    spoken = " ".join(turn.content for turn in document.turns)
    assert "David Chen" in spoken and "estate planning" in spoken
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_different_prompts_get_different_conversations(claude: anthropic.AsyncAnthropic) -> None:
    prompts = [PROMPT.replace("David Chen", name) for name in ("Ana Ruiz", "Bo Lindqvist", "Chidi Okafor", "Dee Park")]

    documents = [document_of(await create(claude, messages=[{"role": "user", "content": p}])) for p in prompts]

    assert [d.metadata.persona for d in documents] == ["Ana Ruiz", "Bo Lindqvist", "Chidi Okafor", "Dee Park"]
    assert len({name_free_turns(d) for d in documents}) > 1, "the lines and length vary, not only the name"


async def test_reads_the_prompt_lines_case_insensitively_from_system_and_block_content(
    claude: anthropic.AsyncAnthropic,
) -> None:
    message = await create(
        claude,
        system="PERSONA: Maria Lopez\ntier: edge_case",
        messages=[{"role": "user", "content": [{"type": "text", "text": "training topic: Retirement Income"}]}],
    )

    metadata = document_of(message).metadata
    assert (metadata.persona, metadata.training_topic, metadata.tier) == ("Maria Lopez", "Retirement Income", "edge_case")
    assert metadata.emotional_arc == "Unknown arc"


async def test_a_repair_follow_up_gets_a_valid_document(claude: anthropic.AsyncAnthropic) -> None:
    messages = [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": "{not json"},
        {"role": "user", "content": "That was not valid JSON. Return only the corrected document."},
    ]

    document = document_of(await create(claude, messages=messages))

    assert document.metadata.persona == "David Chen"


async def test_raw_response_carries_request_id_and_rate_limit_headers(claude: anthropic.AsyncAnthropic) -> None:
    raw = await claude.messages.with_raw_response.create(**request())

    assert raw.headers["request-id"].startswith("req_standin_")
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert int(raw.headers["anthropic-ratelimit-tokens-remaining"]) > 0
    for budget in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", raw.headers[f"anthropic-ratelimit-{budget}-reset"])
    document_of(await raw.parse())


async def test_every_response_says_it_comes_from_the_stand_in(claude: anthropic.AsyncAnthropic) -> None:
    # The mark, not the worker's settings, tells who wrote a reply: a worker with a dummy API key
    # that talks to the stand-in must still record the stand-in.
    answered = await claude.messages.with_raw_response.create(**request())
    async with claude.messages.stream(**request()) as stream:
        await stream.get_final_message()
        streamed = stream.response.headers
    counted = await claude.messages.with_raw_response.count_tokens(model=MODEL, messages=request()["messages"])
    with pytest.raises(anthropic.BadRequestError) as refused:
        await create(claude, max_tokens=0)

    for headers in (answered.headers, streamed, counted.headers, refused.value.response.headers):
        assert headers["x-brightrun-standin"] == "1"


async def test_token_buckets_show_what_the_answers_spent_and_when_they_are_full_again(
    claude: anthropic.AsyncAnthropic,
) -> None:
    raw = await claude.messages.with_raw_response.create(**request())
    message = await raw.parse()

    headers = raw.headers
    usage = message.usage
    assert usage.cache_creation_input_tokens is not None
    spent_input = usage.input_tokens + usage.cache_creation_input_tokens
    input_limit, output_limit = int(headers["anthropic-ratelimit-input-tokens-limit"]), int(headers["anthropic-ratelimit-output-tokens-limit"])
    # A bucket refills continuously: what it shows is the limit less the spend, give or take a refill.
    assert input_limit - spent_input <= int(headers["anthropic-ratelimit-input-tokens-remaining"]) < input_limit
    assert output_limit - usage.output_tokens <= int(headers["anthropic-ratelimit-output-tokens-remaining"]) < output_limit
    # tokens-* is the more depleted of the two buckets (here the output bucket, the smaller).
    assert headers["anthropic-ratelimit-tokens-limit"] == str(output_limit)
    assert headers["anthropic-ratelimit-tokens-remaining"] == headers["anthropic-ratelimit-output-tokens-remaining"]


def test_a_token_bucket_refills_at_its_rate_up_to_its_limit_and_never_back_in_time() -> None:
    bucket = TokenBucket(per_minute=600)  # 10 tokens a second

    bucket.spend(100.0, 600)
    assert (bucket.remaining(100.0), bucket.full_at(100.0)) == (0, 160.0)
    assert bucket.remaining(130.0) == 300
    bucket.spend(120.0, 100)  # a request that started earlier is answered later: no refill backwards
    assert bucket.remaining(130.0) == 200
    assert bucket.remaining(1000.0) == 600


async def test_count_tokens_answers_the_input_tokens_of_a_request_without_creating_a_message(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    counted = await claude.messages.count_tokens(**{k: v for k, v in request().items() if k != "max_tokens"})
    message = await create(claude)

    usage = message.usage
    assert usage.cache_creation_input_tokens is not None and usage.cache_read_input_tokens is not None
    assert counted.input_tokens == usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    stats = await control.stats()
    assert stats["token_counts"] == 1 and stats["requests"] == 1
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        await claude.messages.count_tokens(model=MODEL, messages=[])


async def test_count_tokens_has_the_documented_shape_and_refuses_what_the_api_refuses(
    base_url: str, claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    body = {k: v for k, v in request().items() if k != "max_tokens"}
    headers = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/v1/messages/count_tokens", json=body, headers=headers) as answered:
            assert answered.status == 200
            counted = await answered.json()
        async with http.post(f"{base_url}/v1/messages/count_tokens", json=body) as unauthenticated:
            assert unauthenticated.status == 401
    assert list(counted) == ["input_tokens"] and counted["input_tokens"] > 0

    # A Messages request's own fields that count_tokens does not take are refused, as the API does.
    for field, value in (("max_tokens", 100), ("stream", True), ("temperature", 0.5), ("metadata", {})):
        with pytest.raises(anthropic.BadRequestError, match=f"{field}: Extra inputs are not permitted"):
            await claude.messages.count_tokens(**body, extra_body={field: value})
    with pytest.raises(anthropic.BadRequestError, match="system"):
        await claude.messages.count_tokens(**body | {"system": 42})
    with pytest.raises(anthropic.BadRequestError, match="model"):
        await claude.messages.count_tokens(model="", messages=body["messages"])
    with pytest.raises(anthropic.BadRequestError, match="role"):
        await claude.messages.count_tokens(model=MODEL, messages=[{"role": "system", "content": "hi"}])
    # Only the accepted count is counted; no message was created.
    assert (await control.stats())["token_counts"] == 1 and (await control.stats())["requests"] == 0


async def test_count_tokens_agrees_with_the_usage_of_the_answer_for_any_prompt(claude: anthropic.AsyncAnthropic) -> None:
    # Lengths that do not divide by four, a system given as a string, and a repair's three turns.
    for system, messages in (
        ("You write conversations.", [{"role": "user", "content": "x" * 4001}]),
        (SYSTEM, [{"role": "user", "content": PROMPT + "!"}]),
        (SYSTEM, [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "{"},
                  {"role": "user", "content": "Reply again with only the JSON object."}]),
    ):
        counted = await claude.messages.count_tokens(model=MODEL, system=system, messages=messages)  # type: ignore[arg-type]
        usage = (await create(claude, system=system, messages=messages)).usage

        assert counted.input_tokens == (
            usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        )


async def test_latency_delays_the_answer(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(latency_ms=300)

    started = time.monotonic()
    await create(claude)

    assert time.monotonic() - started >= 0.3


# --- streaming ------------------------------------------------------------------------------


async def test_streaming_sends_the_real_event_sequence_and_a_valid_document(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    async with claude.messages.stream(**request(), extra_headers={"x-brightrun-item": "item-7"}) as stream:
        events = [event async for event in stream]
        message = await stream.get_final_message()
        headers = stream.response.headers

    names = [event.type for event in events if event.type != "text"]  # "text" is the SDK's own helper event
    deltas = [event.delta.text for event in events if event.type == "content_block_delta" and isinstance(event.delta, TextDelta)]
    assert names[:2] == ["message_start", "content_block_start"] and len(deltas) > 3
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(deltas) == text_of(message)
    assert document_of(message).metadata.persona == "David Chen"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 1
    assert message.usage.cache_creation_input_tokens is not None
    assert message.usage.cache_creation_input_tokens > 0
    assert headers["request-id"].startswith("req_standin_")
    assert (await control.stats())["log"][0] | {"at": 0} == {
        "at": 0, "outcome": "ok", "item": "item-7", "stream": True, "answered": True
    }  # fmt: skip


async def test_a_slow_first_token_keeps_the_open_stream_silent(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(first_token_ms=500)

    sent = time.monotonic()
    async with claude.messages.stream(**request()) as stream:
        arrivals = [(event.type, time.monotonic()) async for event in stream]

    names = [name for name, _ in arrivals]
    assert names.index("message_start") < names.index("content_block_delta")
    # From the request, not from message_start: a busy client may read message_start late.
    first_text = next(at for name, at in arrivals if name == "content_block_delta")
    assert first_text - sent >= 0.5


async def test_an_answer_comes_at_the_configured_output_pace(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(output_tokens_per_s=1000)

    sent = time.monotonic()
    answer = await create(claude)
    assert time.monotonic() - sent >= answer.usage.output_tokens / 1000

    sent = time.monotonic()
    async with claude.messages.stream(**request()) as stream:
        streamed = await stream.get_final_message()
    assert time.monotonic() - sent >= streamed.usage.output_tokens / 1000


async def test_a_stand_in_started_at_claudes_pace_returns_to_it_on_reset() -> None:
    runner, port = await start_standin(port=0, pace=PACES["claude"])
    try:
        control = StandinControl(f"http://127.0.0.1:{port}")
        await control.configure(first_token_ms=0, output_tokens_per_s=0)
        await control.reset()

        pace = await control.configure()
        # About 1 s to the first token, then 60-80 output tokens a second, as Claude writes.
        assert pace["first_token_ms"] == 1000 and 60 <= pace["output_tokens_per_s"] <= 80
    finally:
        await runner.cleanup()


async def test_a_streamed_error_fault_fails_before_the_stream_starts(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["529"])

    with pytest.raises(anthropic.OverloadedError):
        async with claude.messages.stream(**request()):
            pytest.fail("the stream must not open")


async def test_a_streamed_truncated_reply_stops_at_max_tokens(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["truncated"])

    async with claude.messages.stream(**request()) as stream:
        message = await stream.get_final_message()

    assert message.stop_reason == "max_tokens"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(message))


# --- prompt caching -------------------------------------------------------------------------


async def test_a_cached_system_prompt_is_written_once_then_read(claude: anthropic.AsyncAnthropic) -> None:
    first, second = await create(claude), await create(claude)
    other_system = await create(claude, system=[{**SYSTEM[0], "text": "Other instructions. " * 300}])
    uncached = await create(claude, system=SYSTEM[0]["text"])

    assert first.usage.cache_creation_input_tokens is not None
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert other_system.usage.cache_creation_input_tokens is not None
    assert other_system.usage.cache_creation_input_tokens > 0
    assert uncached.usage.cache_creation_input_tokens == uncached.usage.cache_read_input_tokens == 0
    assert uncached.usage.input_tokens > first.usage.input_tokens, "the uncached system counts as input"
    assert first.usage.cache_creation is not None and second.usage.cache_creation is not None
    assert first.usage.cache_creation.model_dump() == {
        "ephemeral_5m_input_tokens": first.usage.cache_creation_input_tokens,
        "ephemeral_1h_input_tokens": 0,
    }
    assert second.usage.cache_creation.model_dump() == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}


async def test_a_prompt_shorter_than_the_models_minimum_is_not_cached_and_not_refused(
    claude: anthropic.AsyncAnthropic,
) -> None:
    short = [{**SYSTEM[0], "text": "You write training conversations. " * 100}]  # 850 tokens < 1,024
    haiku_short = "You write training conversations. " * 400  # 3,400 tokens < Haiku 4.5's 4,096

    answers = [await create(claude, system=short), await create(claude, system=short)]
    answers += [await create(claude, model="claude-haiku-4-5", system=[{**SYSTEM[0], "text": haiku_short}])]
    cached_on_opus_5 = await create(claude, model="claude-opus-5", system=short)  # its minimum is 512

    for answer in answers:
        assert answer.stop_reason == "end_turn"
        assert answer.usage.cache_creation_input_tokens == answer.usage.cache_read_input_tokens == 0
    assert answers[0].usage.input_tokens > 850
    assert cached_on_opus_5.usage.cache_creation_input_tokens == 850


async def test_a_5_minute_cache_entry_expires_unless_a_hit_refreshes_it(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    written = await create(claude)
    await control.configure(cache_clock_offset_s=290)
    refreshed = await create(claude)  # a hit 290 s on starts the 5 minutes again
    await control.configure(cache_clock_offset_s=580)
    still_cached = await create(claude)
    await control.configure(cache_clock_offset_s=881)
    expired = await create(claude)  # 301 s after the last hit

    tokens = written.usage.cache_creation_input_tokens
    assert tokens and refreshed.usage.cache_read_input_tokens == still_cached.usage.cache_read_input_tokens == tokens
    assert expired.usage.cache_creation_input_tokens == tokens and expired.usage.cache_read_input_tokens == 0


async def test_a_1_hour_cache_entry_outlives_5_minutes_and_is_reported_as_such(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    system = [{**SYSTEM[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    written = await create(claude, system=system)
    await control.configure(cache_clock_offset_s=3000)
    read = await create(claude, system=system)
    await control.configure(cache_clock_offset_s=3000 + 3601)
    expired = await create(claude, system=system)

    tokens = written.usage.cache_creation_input_tokens
    assert written.usage.cache_creation is not None
    assert written.usage.cache_creation.model_dump() == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": tokens}
    assert tokens and read.usage.cache_read_input_tokens == tokens
    assert expired.usage.cache_creation_input_tokens == tokens


async def test_a_cache_entry_belongs_to_one_model(claude: anthropic.AsyncAnthropic) -> None:
    await create(claude)
    other_model = await create(claude, model="claude-opus-4-8")

    assert other_model.usage.cache_creation_input_tokens and other_model.usage.cache_read_input_tokens == 0


# --- thinking, refusals, the context window -------------------------------------------------


async def test_a_model_that_thinks_answers_a_thinking_block_before_its_text(claude: anthropic.AsyncAnthropic) -> None:
    message = await create(claude, model="claude-opus-5-5", max_tokens=12_000)

    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking and thinking.signature
    assert isinstance(text, TextBlock) and ConversationDocument.model_validate_json(text.text)
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == (len(thinking.thinking) + len(text.text)) // 4


async def test_thinking_spends_max_tokens_and_cuts_the_text_off(claude: anthropic.AsyncAnthropic) -> None:
    cut_in_text = await create(claude, model="claude-opus-5-5", max_tokens=8200)
    only_thinking = await create(claude, model="claude-opus-5-5", max_tokens=4096)

    assert cut_in_text.stop_reason == "max_tokens" and cut_in_text.usage.output_tokens <= 8200
    assert [block.type for block in cut_in_text.content] == ["thinking", "text"]
    assert only_thinking.stop_reason == "max_tokens" and only_thinking.usage.output_tokens == 4096
    assert [block.type for block in only_thinking.content] == ["thinking"]


async def test_a_streamed_thinking_answer_has_the_documented_events(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(**request(model="claude-sonnet-5-5", max_tokens=8000)) as stream:
        kinds = [(event.type, getattr(getattr(event, "delta", None), "type", None)) async for event in stream]
        message = await stream.get_final_message()

    assert ("content_block_delta", "thinking_delta") in kinds and ("content_block_delta", "signature_delta") in kinds
    assert kinds.index(("content_block_delta", "signature_delta")) < kinds.index(("content_block_delta", "text_delta"))
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert isinstance(message.content[0], ThinkingBlock) and message.content[0].signature.startswith("standin-")


async def test_a_model_that_does_not_think_by_default_answers_text_only(claude: anthropic.AsyncAnthropic) -> None:
    assert [block.type for block in (await create(claude)).content] == ["text"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refusal_fault_answers_stop_reason_refusal_without_text(
    claude: anthropic.AsyncAnthropic, control: StandinControl, stream: bool
) -> None:
    await control.configure(script=["refusal"])

    message: anthropic.types.Message
    if stream:
        async with claude.messages.stream(**request()) as events:
            message = await events.get_final_message()
    else:
        message = await create(claude)

    assert message.stop_reason == "refusal" and message.content == []
    assert (await control.stats())["by_outcome"] == {"refusal": 1}


async def test_a_context_window_fault_cuts_the_text_with_its_stop_reason(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["context_window_exceeded"])

    message = await create(claude)

    assert message.stop_reason == "model_context_window_exceeded"
    with pytest.raises(ValueError):
        document_of(message)


async def test_the_turn_suffix_ends_every_assistant_turn(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    suffix = ' <script>alert("turn")</script>'
    await control.configure(turn_suffix=suffix)

    document = document_of(await create(claude))

    assert all(turn.content.endswith(suffix) == (turn.role == "assistant") for turn in document.turns)


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_class", "error_type"),
    [
        ("429", anthropic.RateLimitError, "rate_limit_error"),
        ("529", anthropic.OverloadedError, "overloaded_error"),
        ("500", anthropic.InternalServerError, "api_error"),
        ("504", anthropic.GatewayTimeoutError, "timeout_error"),
        ("400", anthropic.BadRequestError, "invalid_request_error"),
        ("401", anthropic.AuthenticationError, "authentication_error"),
        ("402", anthropic.PaymentRequiredError, "billing_error"),
        ("403", anthropic.PermissionDeniedError, "permission_error"),
        ("404", anthropic.NotFoundError, "not_found_error"),
    ],
)
async def test_each_error_fault_raises_the_sdk_error_with_anthropics_body(
    claude: anthropic.AsyncAnthropic, control: StandinControl, fault: str, error_class: type, error_type: str
) -> None:
    await control.configure(script=[fault], retry_after_s=7)

    with pytest.raises(anthropic.APIStatusError) as raised:
        await create(claude)

    assert type(raised.value) is error_class and raised.value.status_code == int(fault)
    assert isinstance(raised.value.body, dict) and raised.value.error_code is None
    assert raised.value.body["error"]["type"] == error_type
    assert raised.value.response.headers["request-id"].startswith("req_standin_")
    assert (await control.stats())["by_outcome"] == {fault: 1}


async def test_a_429_fault_says_when_to_retry_and_shows_the_budget_empty(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["429"], retry_after_s=7)

    with pytest.raises(anthropic.RateLimitError) as raised:
        await create(claude)

    headers = raised.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("7", "7000")
    assert headers["anthropic-ratelimit-requests-remaining"] == headers["anthropic-ratelimit-tokens-remaining"] == "0"


async def test_an_overload_says_when_to_retry_in_seconds_and_milliseconds(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["529"], retry_after_s=3)

    with pytest.raises(anthropic.OverloadedError) as raised:
        await create(claude)

    headers = raised.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("3", "3000")


async def test_a_spend_limit_429_carries_its_error_code_and_no_retry_after(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["429_spend_limit"])

    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as raised:
        await create(claude)

    assert raised.value.status_code == 429 and raised.value.type == "rate_limit_error"
    assert raised.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in raised.value.response.headers


async def test_a_413_comes_from_a_proxy_as_html_not_anthropics_json(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["413"])

    with pytest.raises(anthropic.ContentTooLargeError) as raised:
        await create(claude)

    assert raised.value.status_code == 413
    assert isinstance(raised.value.body, str) and "Request Entity Too Large" in raised.value.body


async def test_malformed_and_truncated_replies(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(script=["malformed", "truncated", "ok"])

    malformed, truncated, ok = await create(claude), await create(claude), await create(claude)

    assert malformed.stop_reason == "end_turn"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(malformed))
    assert truncated.stop_reason == "max_tokens"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(truncated))
    document_of(ok)
    assert (await control.stats())["by_outcome"] == {"malformed": 1, "truncated": 1, "ok": 1}


async def test_a_midstream_overload_comes_as_an_sse_error_after_http_200_and_some_text(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(faults={"midstream_overloaded": 1.0})

    texts = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with claude.messages.stream(**request()) as stream:
            async for event in stream:
                texts += [event.delta.text] if event.type == "content_block_delta" and isinstance(event.delta, TextDelta) else []

    assert raised.value.status_code == 200 and stream.response.status_code == 200
    assert raised.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert texts, "the stream had started"
    assert stream.current_message_snapshot.usage.input_tokens > 0, "message_start announced the prompt's tokens"
    with pytest.raises(anthropic.OverloadedError):  # without a stream the API answers 529
        await create(claude)
    assert (await control.stats())["by_outcome"] == {"midstream_overloaded": 2}


async def test_a_midstream_drop_closes_the_connection_mid_answer(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(script=["midstream_drop", "midstream_drop", "ok"])

    texts = []
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        async with claude.messages.stream(**request()) as stream:
            async for event in stream:
                texts += [event.delta.text] if event.type == "content_block_delta" and isinstance(event.delta, TextDelta) else []
    with pytest.raises(anthropic.APIConnectionError):
        await create(claude)
    document_of(await create(claude))  # the server itself is fine

    assert texts, "the stream had started"
    assert (await control.stats())["by_outcome"] == {"midstream_drop": 2, "ok": 1}


async def test_a_call_its_client_cuts_off_stays_unanswered_in_the_log(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    """What a worker killed mid-call looks like: the request arrived, its answer never went out."""
    await control.configure(latency_ms=1500)
    cut = asyncio.create_task(create(claude, extra_headers={"x-brightrun-item": "cut"}))
    await eventually(lambda: _requests_at_least(control, 1), "the first call arrived")
    cut.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cut
    # The second call takes as long as the first would have: by its end, the first is settled.
    await create(claude, extra_headers={"x-brightrun-item": "whole"})

    log = (await control.stats())["log"]
    assert [(entry["item"], entry["answered"]) for entry in log] == [("cut", False), ("whole", True)]


async def _requests_at_least(control: StandinControl, count: int) -> bool:
    return (await control.stats())["requests"] >= count


async def test_the_script_is_used_up_before_random_faults_apply(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    config = await control.configure(script=["500", "ok"], faults={"529": 1.0})
    assert config["script"] == ["500", "ok"] and config["faults"] == {"529": 1.0}

    with pytest.raises(anthropic.InternalServerError) as first:
        await create(claude)
    await create(claude)
    with pytest.raises(anthropic.OverloadedError):
        await create(claude)

    assert type(first.value) is anthropic.InternalServerError
    assert [entry["outcome"] for entry in (await control.stats())["log"]] == ["500", "ok", "529"]


async def test_random_faults_follow_the_configured_share(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(faults={"529": 0.5}, seed=7)

    outcomes = []
    for _ in range(40):
        try:
            await create(claude)
            outcomes.append("ok")
        except anthropic.OverloadedError:
            outcomes.append("529")

    assert 8 <= outcomes.count("529") <= 32
    assert (await control.stats())["by_outcome"] == {"ok": outcomes.count("ok"), "529": outcomes.count("529")}


async def test_the_rpm_limit_counts_the_window_and_answers_429_with_the_wait(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(rpm_limit=2)

    first = await claude.messages.with_raw_response.create(**request())
    second = await claude.messages.with_raw_response.create(**request())
    with pytest.raises(anthropic.RateLimitError) as raised:
        await create(claude)

    assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert [first.headers["anthropic-ratelimit-requests-remaining"], second.headers["anthropic-ratelimit-requests-remaining"]] == ["1", "0"]
    assert 59 <= int(raised.value.response.headers["retry-after"]) <= 60
    assert (await control.stats())["by_outcome"] == {"ok": 2, "429_rpm": 1}


# --- requests refused before any fault ------------------------------------------------------


async def test_invalid_requests_get_a_real_400(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        await create(claude, messages=[])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await create(claude, max_tokens=0)

    assert (await control.stats())["by_outcome"] == {"400_invalid": 2}


async def test_a_missing_api_key_gets_a_401(base_url: str, control: StandinControl) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{base_url}/v1/messages", json=request()) as response:
        assert response.status == 401
        body = await response.json()

    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert (await control.stats())["by_outcome"] == {"401": 1}


# --- control --------------------------------------------------------------------------------


async def test_the_log_records_each_request_and_reset_clears_everything(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(latency_ms=5, faults={"500": 0.5}, script=["ok", "ok"])
    before = time.time()
    await create(claude, extra_headers={"x-brightrun-item": "item-1"})
    await create(claude)

    log = (await control.stats())["log"]
    assert [(e["item"], e["outcome"], e["stream"]) for e in log] == [("item-1", "ok", False), (None, "ok", False)]
    assert before <= log[0]["at"] <= log[1]["at"] <= time.time()

    await control.reset()

    assert await control.stats() == {
        "requests": 0, "by_outcome": {}, "log": [], "batches": 0, "batch_requests": 0, "token_counts": 0
    }
    assert await control.configure() == {
        "latency_ms": 0, "first_token_ms": 0, "faults": {}, "retry_after_s": 1, "seed": None, "rpm_limit": None,
        "script": [], "batch_processing_s": 0.0, "turn_suffix": "", "cache_clock_offset_s": 0.0,
        "output_tokens_per_s": 0.0, "shuffle_results": False, "endpoint_faults": {},
    }


@pytest.mark.parametrize(
    "bad_config",
    [{"faults": {"418": 1.0}}, {"faults": {"429": 0.7, "529": 0.7}}, {"latency_ms": "slow"}, {"first_token_ms": -1},
     {"script": ["nope"]}, {"colour": 1}, {"batch_processing_s": -1}, {"cache_clock_offset_s": -5},
     {"turn_suffix": 3}, {"output_tokens_per_s": -70}],
)
async def test_a_bad_config_is_refused_whole(control: StandinControl, bad_config: dict[str, Any]) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as raised:
        await control.configure(**{"latency_ms": 50} | bad_config)

    assert raised.value.status == 400
    assert (await control.configure())["latency_ms"] == 0


async def test_health(base_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/_standin/health") as response:
        assert response.status == 200 and await response.json() == {"ok": True}


async def test_the_command_line_server_announces_itself_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.standin", "--port", "0", stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        announcement = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
        assert "OFFLINE" in announcement
        found = re.search(r"http://[\d.]+:\d+", announcement)
        assert found, announcement
        url = found.group(0)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/_standin/health") as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
