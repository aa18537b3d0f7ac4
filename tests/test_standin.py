"""The offline Claude stand-in, driven by the real `anthropic` SDK over a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest

from brightrun.standin import start_standin
from models.conversation import ConversationDocument
from tests.standin_control import StandinControl

PROMPT = (
    "Persona: David Chen\nEmotional arc: Couple Conflict -> Alignment\n"
    "Training topic: Essential Estate Planning\nTier: template"
)
SYSTEM = [{"type": "text", "text": "You write training conversations. " * 20, "cache_control": {"type": "ephemeral"}}]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, port = await start_standin(port=0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def claude(base_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0)


@pytest.fixture
def control(base_url: str) -> StandinControl:
    return StandinControl(base_url)


async def create(claude: anthropic.AsyncAnthropic, **overrides) -> anthropic.types.Message:  # noqa: ANN003
    request = {"model": "claude-sonnet-4-6", "max_tokens": 2000, "system": SYSTEM,
               "messages": [{"role": "user", "content": PROMPT}], **overrides}
    return await claude.messages.create(**request)


async def test_answers_with_a_valid_conversation_built_from_the_prompt(claude: anthropic.AsyncAnthropic) -> None:
    message = await create(claude)

    document = ConversationDocument.model_validate_json(message.content[0].text)
    assert message.stop_reason == "end_turn" and message.model == "claude-sonnet-4-6"
    assert document.metadata.persona == "David Chen"
    assert document.metadata.training_topic == "Essential Estate Planning"
    assert "David Chen" in document.turns[0].content
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_streaming_gives_the_same_kind_of_document_and_rate_limit_headers(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=2000, system=SYSTEM, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        deltas = [event async for event in stream if event.type == "content_block_delta"]
        message = await stream.get_final_message()
        headers = stream.response.headers

    assert len(deltas) > 1
    ConversationDocument.model_validate_json(message.content[0].text)
    assert message.usage.output_tokens > 1
    assert int(headers["anthropic-ratelimit-requests-remaining"]) > 0


async def test_the_cached_system_prompt_is_written_once_then_read(claude: anthropic.AsyncAnthropic) -> None:
    first, second = await create(claude), await create(claude)

    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize(
    ("fault", "error_class", "error_type"),
    [
        ("429", anthropic.RateLimitError, "rate_limit_error"),
        ("529", anthropic.OverloadedError, "overloaded_error"),
        ("500", anthropic.InternalServerError, "api_error"),
        ("400", anthropic.BadRequestError, "invalid_request_error"),
    ],
)
async def test_each_error_fault_raises_the_sdk_error_with_anthropics_body(
    claude: anthropic.AsyncAnthropic, control: StandinControl, fault: str, error_class: type, error_type: str
) -> None:
    await control.configure(script=[fault], retry_after_s=7)

    with pytest.raises(error_class) as raised:
        await create(claude)

    assert raised.value.body["error"]["type"] == error_type
    assert raised.value.response.headers["request-id"].startswith("req_standin_")
    if fault == "429":
        assert raised.value.response.headers["retry-after"] == "7"


async def test_malformed_and_truncated_replies(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(script=["malformed", "truncated", "ok"])

    malformed, truncated, ok = await create(claude), await create(claude), await create(claude)

    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content[0].text)
    assert truncated.stop_reason == "max_tokens"
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.content[0].text)
    ConversationDocument.model_validate_json(ok.content[0].text)
    stats = await control.stats()
    assert stats["requests"] == 3
    assert stats["by_outcome"] == {"malformed": 1, "truncated": 1, "ok": 1}


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


async def test_the_rpm_limit_answers_429_with_the_wait(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(rpm_limit=2)

    await create(claude)
    await create(claude)
    with pytest.raises(anthropic.RateLimitError) as raised:
        await create(claude)

    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60
    assert (await control.stats())["by_outcome"] == {"ok": 2, "429_rpm": 1}


async def test_requests_are_logged_per_item_and_reset_clears(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await create(claude, extra_headers={"x-brightrun-item": "item-1"})
    stats = await control.stats()
    assert [(e["item"], e["outcome"]) for e in stats["log"]] == [("item-1", "ok")]

    await control.reset()

    assert (await control.stats())["requests"] == 0


async def test_bad_requests_and_unknown_config_are_refused(
    base_url: str, claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        await create(claude, messages=[])
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{base_url}/v1/messages", json=body) as unauthenticated:
            assert unauthenticated.status == 401
            assert (await unauthenticated.json())["error"]["type"] == "authentication_error"
    with pytest.raises(Exception, match="400"):
        await control.configure(faults={"418": 1.0})
