"""The Message Batches activities against the stand-in's Message Batches API through the real
SDK, PostgreSQL and S3, one step at a time (no worker): what a retried submission adopts, what
each refusal of the batch endpoints does, results in any order, a batch that never ends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import message_batches
from activities.errors import ANTHROPIC_REFUSED
from activities.message_batches import MessageBatchActivities
from brightrun.claude_client import create_claude_client
from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.enums import BatchResultType, DeliveryMode, MessageBatchState, Tier
from models.messages import MessageBatchRef, SubmitBatchInput, SubmittedBatch
from models.tables import BatchItem, MessageBatch, MessageBatchRequest
from service import batches
from worker import load_prices

PERSONAS = ["David Chen", "Maria Gonzalez"]
ARCS = ["Couple Conflict -> Alignment", "Grief -> Acceptance"]
TOPICS = ["Essential Estate Planning"]
REFUSALS = ["401", "402", "403", "429_spend_limit"]


@pytest.fixture
async def claude(stack_settings: Settings) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = create_claude_client(stack_settings)
    yield client
    await client.close()


@pytest.fixture
def steps(
    sessions: async_sessionmaker,
    storage: Storage,
    claude: anthropic.AsyncAnthropic,
    stack_settings: Settings,
    stack_client: Client,
) -> MessageBatchActivities:
    fast_retries = stack_settings.model_copy(update={"claude_retry_base_s": 1.0, "claude_retry_cap_s": 2.0})
    return MessageBatchActivities(sessions, storage, claude, fast_retries, load_prices(stack_settings), stack_client)


async def staged_job(sessions: async_sessionmaker, storage: Storage, items: int) -> uuid.UUID:
    """A batch-mode job with one request staged per item (params in storage), none in a batch."""
    job_id, _total = await batches.create_job(
        sessions,
        batches.LaunchRequest(
            personas=PERSONAS[: items // 2], arcs=ARCS, topics=TOPICS, tier=Tier.TEMPLATE, mode=DeliveryMode.BATCH
        ),
    )
    async with sessions.begin() as session:
        item_ids = (await session.scalars(select(BatchItem.id).where(BatchItem.batch_job_id == job_id))).all()
        for item_id in item_ids:
            custom_id, key = f"{item_id.hex}-1", f"requests/test/{item_id}_1.json"
            session.add(
                MessageBatchRequest(
                    custom_id=custom_id,
                    batch_job_id=job_id,
                    batch_item_id=item_id,
                    request_key=key,
                    raw_key=f"raw/test/{item_id}_raw.json",
                    request_bytes=100,
                )
            )
            body = {
                "custom_id": custom_id,
                "params": {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": "Persona: Someone"}]},
            }
            await storage.put_bytes(storage.conversation_bucket, key, json.dumps(body).encode(), "application/json")
    return job_id


async def requests_of(sessions: async_sessionmaker, job_id: uuid.UUID) -> list[MessageBatchRequest]:
    async with sessions() as session:
        query = select(MessageBatchRequest).where(MessageBatchRequest.batch_job_id == job_id)
        return list((await session.scalars(query)).all())


def submission(job_id: uuid.UUID) -> SubmitBatchInput:
    return SubmitBatchInput(job_id=job_id, message_batch_id=uuid.uuid4(), max_requests=100, max_bytes=100_000)


def ref_of(request: SubmitBatchInput, submitted: SubmittedBatch) -> MessageBatchRef:
    assert submitted.anthropic_batch_id is not None
    return MessageBatchRef(
        job_id=request.job_id, message_batch_id=request.message_batch_id, anthropic_batch_id=submitted.anthropic_batch_id
    )


async def run(step: Any, arg: Any, attempt: int = 1) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return await env.run(step, arg)


async def refused(step: Any, arg: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await run(step, arg)
    return raised.value


# --- defect 1: what a retried submission adopts ----------------------------------------------


async def test_a_retried_submission_releases_a_same_size_batch_of_another_user_once_its_results_show_it(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities
) -> None:
    """The first attempt claimed the requests and its create never reached the API; another user
    created a batch of the same size meanwhile. It may be adopted, but its results name none of
    our requests: they wait for a batch of their own, and go out in it."""
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    await standin.configure(endpoint_faults={"batches": {"500": 1.0}})
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)
    await standin.configure(endpoint_faults={})
    await standin.foreign_batch(2)

    retried = await run(steps.submit_batch, request, attempt=2)
    if retried.anthropic_batch_id is not None:  # adopted: the results decide
        ref = ref_of(request, retried)
        assert (await run(steps.poll_batch, ref)).status == MessageBatchState.ENDED
        await run(steps.store_results, ref)

    requests = await requests_of(sessions, job_id)
    assert [(r.message_batch_id, r.result) for r in requests] == [(None, None)] * 2, "both wait for a batch again"
    again = submission(job_id)
    sent = await run(steps.submit_batch, again)
    assert sent.request_count == 2
    stats = await standin.stats()
    assert (stats["batches"], stats["batch_requests"]) == (1, 2), "our own requests went out, once"
    await run(steps.store_results, ref_of(again, sent))
    assert all(r.result_type == BatchResultType.SUCCEEDED for r in await requests_of(sessions, job_id))


async def test_a_retried_submission_finds_its_own_batch_with_the_workers_clock_a_minute_ahead(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities
) -> None:
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    first = await run(steps.submit_batch, request)
    # The crash before the id was recorded; the worker's clock ran a minute ahead of the API's.
    async with sessions.begin() as session:
        await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == request.message_batch_id)
            .values(anthropic_batch_id=None, create_sent_at=datetime.now(UTC) + timedelta(minutes=1))
        )

    retried = await run(steps.submit_batch, request, attempt=2)

    assert retried.anthropic_batch_id == first.anthropic_batch_id
    assert (await standin.stats())["batches"] == 1, "paid once"
    await run(steps.store_results, ref_of(request, retried))
    assert all(r.result_type == BatchResultType.SUCCEEDED for r in await requests_of(sessions, job_id))
    async with sessions() as session:
        assert (await session.get(MessageBatch, request.message_batch_id)).adopted_at is None, "proved ours"


def answer_lost(claude: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch, before: Any = None) -> None:
    """The next create reaches the API (after `before`, if given) and its answer is lost."""
    create = claude.messages.batches.create

    async def lost(**params: Any) -> Any:
        monkeypatch.setattr(claude.messages.batches, "create", create)
        if before is not None:
            await before()
        await create(**params)
        raise anthropic.APIConnectionError(request=httpx2.Request("POST", "http://standin/v1/messages/batches"))

    monkeypatch.setattr(claude.messages.batches, "create", lost)


@pytest.mark.parametrize("fault", ["401", "529"])
async def test_a_create_the_api_refused_is_sent_again_and_adopts_no_batch_of_another(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities, fault: str
) -> None:
    """The API answered the first create: no batch was made, so the retry has nothing to adopt,
    even with a same-size batch of another user in the listing."""
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    await standin.configure(endpoint_faults={"batches": {fault: 1.0}})
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)
    await standin.configure(endpoint_faults={})
    foreign = await standin.foreign_batch(2)

    retried = await run(steps.submit_batch, request, attempt=2)

    assert retried.anthropic_batch_id not in (None, foreign["id"])
    assert (await standin.stats())["batches"] == 1, "our requests went out in a batch of ours"
    async with sessions() as session:
        assert (await session.get(MessageBatch, request.message_batch_id)).adopted_at is None


async def test_a_create_lost_an_hour_ago_adopts_no_batch_created_since(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities
) -> None:
    """A create got no answer an hour ago and an outage held every retry since: a batch made
    now is no candidate for it, whatever its size."""
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    await standin.configure(endpoint_faults={"batches": {"500": 1.0}})
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)
    await standin.configure(endpoint_faults={})
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    async with sessions.begin() as session:
        await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == request.message_batch_id)
            .values(submitted_at=an_hour_ago, create_sent_at=an_hour_ago)
        )
    foreign = await standin.foreign_batch(2)

    retried = await run(steps.submit_batch, request, attempt=30)

    assert retried.anthropic_batch_id not in (None, foreign["id"])
    assert (await standin.stats())["batches"] == 1


async def test_a_lost_create_answer_finds_our_batch_after_a_nearer_foreign_one_proves_another(
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
    steps: MessageBatchActivities,
    claude: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our create made its batch and the answer was lost; another user's same-size batch was
    created just before ours, nearer the time we sent. The retry adopts that one; its results
    prove it another's, and the other candidate, ours, is adopted: paid once, results kept."""
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    foreign: dict[str, Any] = {}

    async def another_user_first() -> None:
        foreign.update(await standin.foreign_batch(2))

    answer_lost(claude, monkeypatch, before=another_user_first)
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)

    retried = await run(steps.submit_batch, request, attempt=2)
    assert retried.anthropic_batch_id == foreign["id"], "the nearest candidate is adopted first"
    ref = ref_of(request, retried)
    assert (await run(steps.poll_batch, ref)).status == MessageBatchState.ENDED
    await run(steps.store_results, ref)

    assert all(r.result_type == BatchResultType.SUCCEEDED for r in await requests_of(sessions, job_id))
    assert (await standin.stats())["batches"] == 1, "paid once: no second batch of ours"
    async with sessions() as session:
        row = await session.get(MessageBatch, request.message_batch_id)
    assert row.anthropic_batch_id != foreign["id"] and row.adopted_at is None, "ours, proved"
    assert row.foreign_batch_ids == [foreign["id"]]


async def test_a_lost_create_answer_polls_our_batch_still_open_when_the_foreign_one_ends(
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
    steps: MessageBatchActivities,
    claude: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)

    async def another_users_quick_batch_first() -> None:
        await standin.configure(batch_processing_s=0)
        await standin.foreign_batch(2)
        await standin.configure(batch_processing_s=2)  # ours

    answer_lost(claude, monkeypatch, before=another_users_quick_batch_first)
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)
    ref = ref_of(request, await run(steps.submit_batch, request, attempt=2))

    polls = [await run(steps.poll_batch, ref)]
    while polls[-1].status != MessageBatchState.ENDED and len(polls) < 50:
        await asyncio.sleep(0.2)
        polls.append(await run(steps.poll_batch, ref))
    await run(steps.store_results, ref)

    assert polls[0].status == MessageBatchState.IN_PROGRESS, "the foreign one ended, ours is polled"
    assert all(r.result_type == BatchResultType.SUCCEEDED for r in await requests_of(sessions, job_id))
    assert (await standin.stats())["batches"] == 1, "paid once"


async def test_a_release_whose_signal_was_lost_is_told_again_by_the_retried_store(
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
    steps: MessageBatchActivities,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An adoption proved another's releases our requests; the worker dies before the workflow
    hears of them. The retried store tells it, or they would wait unclaimed for good."""
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    await standin.configure(endpoint_faults={"batches": {"500": 1.0}})  # the outcome is unknown
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)
    await standin.configure(endpoint_faults={})
    await standin.foreign_batch(2)
    ref = ref_of(request, await run(steps.submit_batch, request, attempt=2))
    told: list[tuple[str, Any]] = []

    async def worker_lost(_client: Any, _workflow_id: str, signal: str, arg: Any) -> bool:
        raise RuntimeError("worker lost")

    async def heard(_client: Any, _workflow_id: str, signal: str, arg: Any) -> bool:
        told.append((signal, arg))
        return True

    await run(steps.poll_batch, ref)
    monkeypatch.setattr(message_batches, "signal_if_running", worker_lost)
    with pytest.raises(RuntimeError):
        await run(steps.store_results, ref)
    monkeypatch.setattr(message_batches, "signal_if_running", heard)
    await run(steps.store_results, ref, attempt=2)

    assert told == [(message_batches.REQUESTS_WAITING_SIGNAL, 2)]
    assert [r.message_batch_id for r in await requests_of(sessions, job_id)] == [None, None]


async def test_cancel_stops_waiting_on_an_adoption_not_proved_ours_and_leaves_it_running(
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
    steps: MessageBatchActivities,
    claude: anthropic.AsyncAnthropic,
) -> None:
    await standin.configure(batch_processing_s=600)
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    await standin.configure(endpoint_faults={"batches": {"500": 1.0}})
    with pytest.raises(ApplicationError):
        await run(steps.submit_batch, request)
    await standin.configure(endpoint_faults={})
    foreign = await standin.foreign_batch(2)
    ref = ref_of(request, await run(steps.submit_batch, request, attempt=2))
    assert ref.anthropic_batch_id == foreign["id"]

    await run(steps.cancel_batches, job_id)
    polled = await run(steps.poll_batch, ref)

    assert polled.status == MessageBatchState.ENDED, "the workflow stops waiting for it"
    assert [r.result_type for r in await requests_of(sessions, job_id)] == [BatchResultType.CANCELED] * 2
    assert (await claude.messages.batches.retrieve(foreign["id"])).cancel_initiated_at is None, "never cancelled"


# --- defects 2 and 7: refusals at the batch endpoints -----------------------------------------


@pytest.mark.parametrize("fault", REFUSALS)
async def test_an_account_refusal_at_create_makes_the_submission_wait_and_fails_no_request(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities, fault: str
) -> None:
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    await standin.configure(endpoint_faults={"batches": {fault: 1.0}})

    error = await refused(steps.submit_batch, request)

    assert (error.type, error.non_retryable) == (ANTHROPIC_REFUSED, False)
    assert error.message.startswith("Anthropic refused: ") and f"({fault[:3]} " in error.message
    assert error.details and error.details[0].since is not None, "since when the job waits"
    assert [r.result_type for r in await requests_of(sessions, job_id)] == [None, None], "no request failed"
    await standin.configure(endpoint_faults={})  # the key is fixed
    sent = await run(steps.submit_batch, request, attempt=2)
    assert sent.request_count == 2 and (await standin.stats())["batches"] == 1


async def test_refusals_at_retrieve_results_and_cancel_wait_until_fixed(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities
) -> None:
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    ref = ref_of(request, await run(steps.submit_batch, request))
    await standin.configure(endpoint_faults={"batches": {"401": 1.0}})

    for step, arg in ((steps.poll_batch, ref), (steps.store_results, ref), (steps.cancel_batches, job_id)):
        error = await refused(step, arg)
        assert (error.type, error.non_retryable) == (ANTHROPIC_REFUSED, False), step.__name__

    await standin.configure(endpoint_faults={})
    assert (await run(steps.poll_batch, ref)).status == MessageBatchState.ENDED
    await run(steps.store_results, ref)
    assert all(r.result_type == BatchResultType.SUCCEEDED for r in await requests_of(sessions, job_id))


async def test_a_batch_deleted_at_the_api_ends_with_its_requests_expired(
    sessions: async_sessionmaker, storage: Storage, standin: StandinControl, steps: MessageBatchActivities
) -> None:
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    ref = ref_of(request, await run(steps.submit_batch, request))
    await standin.configure(endpoint_faults={"batches": {"404": 1.0}})

    polled = await run(steps.poll_batch, ref)
    await run(steps.store_results, ref)

    assert polled.status == MessageBatchState.ENDED
    assert [r.result_type for r in await requests_of(sessions, job_id)] == [BatchResultType.EXPIRED] * 2


# --- defect 8: results in any order -------------------------------------------------------------


async def test_a_retried_store_resumes_by_custom_id_when_results_come_in_another_order(
    sessions: async_sessionmaker,
    storage: Storage,
    standin: StandinControl,
    steps: MessageBatchActivities,
    claude: anthropic.AsyncAnthropic,
) -> None:
    await standin.configure(shuffle_results=True)
    job_id = await staged_job(sessions, storage, items=4)
    request = submission(job_id)
    ref = ref_of(request, await run(steps.submit_batch, request))
    order = [line.custom_id async for line in await claude.messages.batches.results(ref.anthropic_batch_id)]
    # An earlier attempt stored two results and heartbeat "2 stored"; this listing has those two
    # last: a retry that skips the first two lines would never store the other two.
    stored_before = order[2:]
    async with sessions.begin() as session:
        for custom_id in stored_before:
            await session.execute(
                update(MessageBatchRequest)
                .where(MessageBatchRequest.custom_id == custom_id)
                .values(result_type="succeeded", result={"custom_id": custom_id, "result_type": "succeeded"})
            )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[{"stored": 2}])

    await env.run(steps.store_results, ref)

    results = {r.custom_id: r.result for r in await requests_of(sessions, job_id)}
    assert all(results.values()), "every request has its result"
    assert all((results[c] or {}).get("generated") for c in order[:2]), "the two left are stored from the results"


async def test_a_request_missing_from_the_results_counts_as_expired(
    sessions: async_sessionmaker,
    storage: Storage,
    steps: MessageBatchActivities,
    claude: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    ref = ref_of(request, await run(steps.submit_batch, request))
    all_results = claude.messages.batches.results

    async def all_but_the_first(message_batch_id: str, **options: Any) -> Any:
        decoder = await all_results(message_batch_id, **options)
        lines = [line async for line in decoder]

        class Stream:
            http_response = decoder.http_response  # says who sent them

            async def __aiter__(self) -> AsyncIterator[Any]:
                for line in lines[1:]:
                    yield line

        return Stream()

    monkeypatch.setattr(claude.messages.batches, "results", all_but_the_first)

    await run(steps.store_results, ref)

    kinds = sorted(r.result_type or "" for r in await requests_of(sessions, job_id))
    assert kinds == [BatchResultType.EXPIRED, BatchResultType.SUCCEEDED]


# --- who answered ------------------------------------------------------------------------------


async def test_results_from_the_stand_in_are_the_stand_ins_even_with_an_api_key_set(
    sessions: async_sessionmaker, storage: Storage, stack_settings: Settings, stack_client: Client
) -> None:
    # A dummy key (in .env, or CI's) with ANTHROPIC_BASE_URL at the stand-in: who answered decides.
    keyed = stack_settings.model_copy(update={"anthropic_api_key": SecretStr("sk-ant-dummy")})
    claude = create_claude_client(keyed)
    steps = MessageBatchActivities(sessions, storage, claude, keyed, load_prices(keyed), stack_client)
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)

    await run(steps.store_results, ref_of(request, await run(steps.submit_batch, request)))

    await claude.close()
    for staged in await requests_of(sessions, job_id):
        generated = (staged.result or {})["generated"]
        assert (generated["provider"], generated["provider_host"]) == ("offline-standin", "127.0.0.1")
        raw = json.loads(await storage.get_bytes(storage.conversation_bucket, staged.raw_key))
        assert raw["generated_by"] == "offline-standin"


# --- defect 6: a batch that never ends ---------------------------------------------------------


async def test_a_batch_still_open_past_its_expiry_is_cancelled_and_keeps_the_results_it_had(
    sessions: async_sessionmaker,
    storage: Storage,
    steps: MessageBatchActivities,
    claude: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API says the batch expired 25 h ago and still runs; its requests had succeeded (paid).
    It is cancelled and polled until it ends: the successes are kept, none is sent again."""
    job_id = await staged_job(sessions, storage, items=2)
    request = submission(job_id)
    ref = ref_of(request, await run(steps.submit_batch, request))
    retrieve, cancel = claude.messages.batches.retrieve, claude.messages.batches.cancel
    cancelled: list[str] = []

    async def two_days_later(message_batch_id: str, **options: Any) -> Any:
        batch = await retrieve(message_batch_id, **options)
        if cancelled:
            return batch
        return batch.model_copy(
            update={"processing_status": "in_progress", "expires_at": datetime.now(UTC) - timedelta(hours=25)}
        )

    async def cancel_once(message_batch_id: str, **options: Any) -> Any:
        cancelled.append(message_batch_id)
        return await cancel(message_batch_id, **options)

    monkeypatch.setattr(claude.messages.batches, "retrieve", two_days_later)
    monkeypatch.setattr(claude.messages.batches, "cancel", cancel_once)

    first = await run(steps.poll_batch, ref)
    second = await run(steps.poll_batch, ref)
    await run(steps.store_results, ref)

    assert cancelled == [ref.anthropic_batch_id], "cancelled at the API"
    assert (first.status, second.status) == (MessageBatchState.IN_PROGRESS, MessageBatchState.ENDED)
    assert [r.result_type for r in await requests_of(sessions, job_id)] == [BatchResultType.SUCCEEDED] * 2
