"""The stand-in's Message Batches API, driven by the real `anthropic` SDK over a real socket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import anthropic
import pytest
from anthropic.types.messages.batch_create_params import Request

from devtools.standin_control import StandinControl
from models.conversation import ConversationDocument
from tests.helpers import eventually

MODEL = "claude-sonnet-4-6"
SYSTEM = [{"type": "text", "text": "You write training conversations. " * 130, "cache_control": {"type": "ephemeral"}}]


def prompt(n: int) -> str:
    return f"Write one conversation.\nPersona: Person {n} Example\nEmotional arc: Fear -> Confidence\nTraining topic: Topic {n}\nTier: template"


def batch_request(n: int, **params: Any) -> Request:
    """A request as the API takes it; `params` may make it one the API refuses, on purpose."""
    body = {"model": MODEL, "max_tokens": 2000, "system": SYSTEM, "messages": [{"role": "user", "content": prompt(n)}]}
    return cast(Request, {"custom_id": f"item-{n}", "params": body | params})


async def ended(claude: anthropic.AsyncAnthropic, batch_id: str) -> anthropic.types.messages.MessageBatch:
    async def has_ended() -> bool:
        return (await claude.messages.batches.retrieve(batch_id)).processing_status == "ended"

    await eventually(has_ended, f"batch {batch_id} ended", timeout_s=10)
    return await claude.messages.batches.retrieve(batch_id)


async def results(claude: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result async for line in await claude.messages.batches.results(batch_id)}


async def test_a_batch_is_in_progress_then_ends_with_one_result_per_request(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(batch_processing_s=0.5)
    created = await claude.messages.batches.create(requests=[batch_request(n) for n in range(3)])
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert created.results_url is None

    batch = await ended(claude, created.id)
    assert batch.request_counts.succeeded == 3 and batch.request_counts.processing == 0
    assert batch.ended_at is not None and batch.results_url
    answers = await results(claude, created.id)
    assert set(answers) == {"item-0", "item-1", "item-2"}
    for n in range(3):
        result = answers[f"item-{n}"]
        assert result.type == "succeeded"
        document = ConversationDocument.model_validate_json(result.message.content[0].text)
        assert document.metadata.persona == f"Person {n} Example"
    # One cache write for the shared system prompt, reads after it.
    usages = [answers[f"item-{n}"].message.usage for n in range(3)]
    assert sum(u.cache_creation_input_tokens > 0 for u in usages) == 1
    assert sum(u.cache_read_input_tokens > 0 for u in usages) == 2
    stats = await control.stats()
    assert (stats["batches"], stats["batch_requests"], stats["requests"]) == (1, 3, 0)


async def test_a_batch_of_several_megabytes_is_taken_as_the_api_takes_it(claude: anthropic.AsyncAnthropic) -> None:
    # 400 requests of about 5 KB: over 2 MB, far below the API's 256 MB for a batch.
    created = await claude.messages.batches.create(requests=[batch_request(n) for n in range(400)])

    assert created.request_counts.processing + created.request_counts.succeeded == 400


async def test_every_batch_response_says_it_comes_from_the_stand_in(claude: anthropic.AsyncAnthropic) -> None:
    created = await claude.messages.batches.with_raw_response.create(requests=[batch_request(0)])
    batch_id = (await created.parse()).id
    await ended(claude, batch_id)
    retrieved = await claude.messages.batches.with_raw_response.retrieve(batch_id)
    listed = await claude.messages.batches.with_raw_response.list()
    decoder = await claude.messages.batches.results(batch_id)
    assert [line.custom_id async for line in decoder] == ["item-0"]

    for headers in (created.headers, retrieved.headers, listed.headers, decoder.http_response.headers):
        assert headers["x-brightrun-standin"] == "1"


async def test_results_are_not_ready_before_the_batch_ends(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(batch_processing_s=30)
    created = await claude.messages.batches.create(requests=[batch_request(0)])
    with pytest.raises(anthropic.AnthropicError, match="finished processing"):
        await claude.messages.batches.results(created.id)


async def test_each_outcome_of_the_script_becomes_its_result(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    await control.configure(script=["ok", "400", "529", "expired", "malformed", "midstream_drop"])
    requests = [batch_request(n) for n in range(6)]
    requests.append(batch_request(6, max_tokens=0))  # params are checked only once the batch ends
    created = await claude.messages.batches.create(requests=requests)
    batch = await ended(claude, created.id)
    assert batch.request_counts.model_dump() == {"processing": 0, "succeeded": 2, "errored": 4, "canceled": 0, "expired": 1}

    answers = await results(claude, created.id)
    assert answers["item-0"].type == "succeeded"
    assert answers["item-1"].error.error.type == "invalid_request_error"
    assert answers["item-2"].error.error.type == "overloaded_error"
    assert answers["item-3"].type == "expired"
    assert answers["item-4"].type == "succeeded"
    with pytest.raises(ValueError):
        ConversationDocument.model_validate_json(answers["item-4"].message.content[0].text)
    assert answers["item-5"].error.error.type == "api_error"
    assert answers["item-6"].type == "errored"
    assert "max_tokens" in answers["item-6"].error.error.message


async def test_a_cancel_ends_the_batch_and_cancels_what_had_not_finished(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(batch_processing_s=3600, seed=7)
    created = await claude.messages.batches.create(requests=[batch_request(n) for n in range(20)])
    canceling = await claude.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None

    batch = await ended(claude, created.id)
    assert batch.request_counts.canceled == 20
    assert {r.type for r in (await results(claude, created.id)).values()} == {"canceled"}


async def test_list_pages_newest_first(claude: anthropic.AsyncAnthropic) -> None:
    created = [(await claude.messages.batches.create(requests=[batch_request(n)])).id for n in range(5)]
    listed = [batch.id async for batch in claude.messages.batches.list(limit=2)]
    assert listed == list(reversed(created))
    first_page = await claude.messages.batches.list(limit=2)
    assert [b.id for b in first_page.data] == [created[4], created[3]] and first_page.has_more


@pytest.mark.parametrize(
    ("requests", "problem"),
    [
        ([], "at least one request"),
        ([batch_request(0) | {"custom_id": "has space"}], "custom_id"),
        ([batch_request(0), batch_request(0)], "duplicate custom_id"),
    ],
)
async def test_a_bad_batch_is_refused_with_the_reason(
    claude: anthropic.AsyncAnthropic, requests: list[Request], problem: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=problem):
        await claude.messages.batches.create(requests=requests)


async def test_an_unknown_batch_is_not_found(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve("msgbatch_nope")


async def test_a_reset_forgets_the_batches(claude: anthropic.AsyncAnthropic, control: StandinControl) -> None:
    created = await claude.messages.batches.create(requests=[batch_request(0)])
    await control.reset()
    assert (await control.stats())["batches"] == 0
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve(created.id)


async def test_shuffled_results_come_in_another_order_than_the_requests(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    await control.configure(shuffle_results=True, seed=7)
    created = await claude.messages.batches.create(requests=[batch_request(n) for n in range(5)])

    order = [line.custom_id async for line in await claude.messages.batches.results(created.id)]

    assert sorted(order) == [f"item-{n}" for n in range(5)] and order != [f"item-{n}" for n in range(5)]


async def test_a_foreign_batch_is_listed_but_not_counted_as_ours(
    claude: anthropic.AsyncAnthropic, control: StandinControl
) -> None:
    foreign = await control.foreign_batch(3)

    listed = [batch async for batch in claude.messages.batches.list(limit=5)]
    assert listed[0].id == foreign["id"] and listed[0].request_counts.succeeded == 3
    custom_ids = [line.custom_id async for line in await claude.messages.batches.results(foreign["id"])]
    assert len(custom_ids) == 3 and all(c.startswith("foreign-") for c in custom_ids)
    stats = await control.stats()
    assert (stats["batches"], stats["batch_requests"]) == (0, 0)


@pytest.mark.parametrize(
    ("fault", "error", "error_code"),
    [
        ("401", anthropic.AuthenticationError, None),
        ("402", anthropic.PaymentRequiredError, None),
        ("403", anthropic.PermissionDeniedError, None),
        ("404", anthropic.NotFoundError, None),
        ("429_spend_limit", anthropic.RateLimitError, "enforced_spend_limit_reached"),
    ],
)
async def test_endpoint_faults_refuse_every_batch_endpoint_with_the_apis_error(
    claude: anthropic.AsyncAnthropic, control: StandinControl, fault: str, error: type[Exception], error_code: str | None
) -> None:
    created = await claude.messages.batches.create(requests=[batch_request(0)])
    await control.configure(endpoint_faults={"batches": {fault: 1.0}})

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "create": lambda: claude.messages.batches.create(requests=[batch_request(1)]),
        "retrieve": lambda: claude.messages.batches.retrieve(created.id),
        "list": lambda: claude.messages.batches.list(),
        "results": lambda: claude.messages.batches.results(created.id),
        "cancel": lambda: claude.messages.batches.cancel(created.id),
    }
    for name, call in calls.items():
        with pytest.raises(error) as raised:
            await call()
        assert isinstance(raised.value, anthropic.APIStatusError), name
        assert raised.value.error_code == error_code and raised.value.api_message, name

    await control.configure(endpoint_faults={})
    assert (await claude.messages.batches.retrieve(created.id)).id == created.id


async def test_a_bad_endpoint_fault_config_is_refused(control: StandinControl) -> None:
    with pytest.raises(Exception, match="400"):
        await control.configure(endpoint_faults={"batches": {"418": 1.0}})
