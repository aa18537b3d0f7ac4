"""Anthropic Message Batches: staging an item's request, submitting a batch exactly once, polling
it, and bringing each result to its item. Prompts and replies stay in storage; workflow payloads
carry ids, keys and counts only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import ColumnElement, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.claude import backoff_delay, classify_failure, heartbeating, refusal_reason
from activities.claude_requests import call_shape, priced_usage, raw_response_document, request_text
from activities.errors import ANTHROPIC_INVALID_REQUEST, ANTHROPIC_REFUSED
from brightrun.claude_client import Responder, answered_by
from brightrun.logs import get_logger
from brightrun.pricing import PriceTable
from brightrun.settings import Settings
from brightrun.storage import Storage, batch_request_key
from brightrun.temporal_client import signal_if_running
from models.enums import BatchResultType, MessageBatchState
from models.messages import (
    BATCH_RESULT_SIGNAL,
    REQUESTS_WAITING_SIGNAL,
    AnnounceBatchResults,
    BatchResult,
    CheckBatchRequest,
    CheckedBatchRequest,
    GeneratedRaw,
    MessageBatchRef,
    PolledBatch,
    RefusalDetails,
    StageBatchRequest,
    SubmitBatchInput,
    SubmittedBatch,
)
from models.tables import MessageBatch, MessageBatchRequest
from models.workflow_ids import item_workflow_id, message_batches_workflow_id

if TYPE_CHECKING:
    # The SDK takes over a second to import: imported where it is called (activities/claude.py says why).
    import anthropic
    from anthropic import AsyncAnthropic
    from anthropic.types.messages.batch_create_params import Request

log = get_logger(__name__)

# API errors of the batch endpoints retry until the API is back: an outage delays, never fails.
_UNLIMITED_ATTEMPTS = 2**31
# The cache prefix every request of a job shares; batches ask for the 1-hour cache because a
# batch may take longer than the 5-minute one lives.
BATCH_CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}
# Results are stored in chunks (one database round trip each; a retried attempt skips the requests
# a chunk gave a result) and announced in bounded bursts of signals.
RESULTS_CHUNK = 200
SIGNALS_AT_ONCE = 32
# A retried submission whose earlier create's outcome is unknown looks for that batch among those
# the API lists as created this long either side of when the create was sent (clock skew between
# us and the API, and the create's own duration). A batch is ours only once its results name our
# requests.
ADOPTION_WINDOW = timedelta(minutes=10)
# Candidates an adoption may check before its requests go out on their own.
ADOPTION_CHECKS = 5
# The API ends every batch by its expires_at (24 h after creation); one still open this long
# after is cancelled and polled until it ends, and one still open this long after its cancel
# ends here with its open requests expired.
OVERDUE_MARGIN = timedelta(hours=1)


# Staging and claiming a job's requests exclude each other (stagings do not): see _claim.
_REQUESTS_STAGED = text("SELECT pg_advisory_xact_lock_shared(hashtext('batch-requests:' || :job))")
_REQUESTS_CLAIMED = text("SELECT pg_advisory_xact_lock(hashtext('batch-requests:' || :job))")


class _Claim(NamedTuple):
    requests: list[tuple[str, str]]  # (custom_id, request_key)
    anthropic_batch_id: str | None  # recorded by an earlier attempt
    create_sent_at: datetime | None  # an earlier attempt's create whose outcome is unknown
    remaining: int  # the job's requests still waiting


def _answered_without_a_batch(exc: anthropic.APIError) -> bool:
    """The API answered the create and made no batch: a 4xx, or 529 (refused at the door). A
    connection error, a timeout or another 5xx leaves the outcome unknown."""
    import anthropic

    if not isinstance(exc, anthropic.APIStatusError):
        return False
    return exc.status_code < 500 or exc.status_code == 529


def _waiting_for_a_batch(job_id: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    return (
        MessageBatchRequest.batch_job_id == job_id,
        MessageBatchRequest.message_batch_id.is_(None),
        MessageBatchRequest.result_type.is_(None),
    )


def batch_custom_id(item_id: uuid.UUID, sequence: int) -> str:
    """Unique across every job (item ids are), and within the API's ^[a-zA-Z0-9_-]{1,64}$."""
    return f"{item_id.hex}-{sequence}"


class MessageBatchActivities:
    def __init__(
        self,
        sessions: async_sessionmaker,
        storage: Storage,
        claude: AsyncAnthropic,
        settings: Settings,
        prices: PriceTable,
        temporal: Client,
    ) -> None:
        self._sessions = sessions
        self._storage = storage
        self._claude = claude
        self._settings = settings
        self._prices = prices
        self._temporal = temporal

    def _failure(self, exc: anthropic.APIError) -> Exception:
        """Classified like an online call's error, without an attempt cap. A refusal of the account
        (key, permission, billing, spend limit) is retried until the operator fixes it: the job
        waits, and no request of it fails for it."""
        import anthropic

        attempt = activity.info().attempt
        reason = refusal_reason(exc) if isinstance(exc, anthropic.APIStatusError) else None
        if reason is not None:
            log.warning("Anthropic refuses the account at the Message Batches endpoints", error=reason, attempt=attempt)
            delay = backoff_delay(attempt, self._settings.claude_retry_base_s, self._settings.claude_retry_cap_s)
            # Since the first attempt: `status` shows the wait as an online call's refusal.
            details = RefusalDetails(reason=reason, since=activity.info().scheduled_time)
            return ApplicationError(f"Anthropic refused: {reason}", details, type=ANTHROPIC_REFUSED, next_retry_delay=delay)
        if isinstance(exc, anthropic.APIStatusError | anthropic.APIConnectionError):
            return classify_failure(exc, attempt, _UNLIMITED_ATTEMPTS, self._settings)
        return exc

    # --- an item's request ----------------------------------------------------------------

    @activity.defn(name="stage_batch_request")
    async def stage_request(self, request: StageBatchRequest) -> str:
        """Writes the request's params to storage and queues it for the job's next batch; returns
        its custom_id. Idempotent: the key and the row derive from the item and the sequence."""
        generate = request.generate
        custom_id = batch_custom_id(generate.item_id, request.sequence)
        prompt = await request_text(
            generate, lambda key, digest: self._storage.get_bytes(self._storage.conversation_bucket, key, digest)
        )
        shape = call_shape(self._settings, generate)
        params = {"model": shape.model, "max_tokens": shape.max_tokens, **prompt.params(shape, BATCH_CACHE_CONTROL)}
        body = json.dumps({"custom_id": custom_id, "params": params}, ensure_ascii=False).encode()
        request_key = batch_request_key(generate.user_id, generate.conversation_id, request.sequence)
        await self._storage.put_bytes(self._storage.conversation_bucket, request_key, body, "application/json")
        details = raw_response_document(self._settings, generate, message={}, request_id=None, generated_by=None)
        del details["message"], details["generated_by"]  # the result's response says who answered
        async with self._sessions.begin() as session:
            await session.execute(_REQUESTS_STAGED, {"job": str(generate.job_id)})
            await session.execute(
                upsert(MessageBatchRequest)
                .values(
                    custom_id=custom_id,
                    batch_job_id=generate.job_id,
                    batch_item_id=generate.item_id,
                    request_key=request_key,
                    raw_key=shape.raw_key,
                    request_bytes=len(body),
                    details=details,
                )
                .on_conflict_do_nothing(index_elements=["custom_id"])
            )
            # Counted up to one past a full batch: the count only has to tell 1 and full apart.
            waiting = await session.scalar(
                select(func.count()).select_from(
                    select(MessageBatchRequest.custom_id)
                    .where(*_waiting_for_a_batch(generate.job_id))
                    .limit((request.batch_size or 1) + 1)
                    .subquery()
                )
            )
        # The workflow hears of the first request of a gathering and of one that fills a batch:
        # it knows of those between (its next batch claims them or counts them; see _claim). A
        # retry tells again, since the attempt before may have failed before it could. Stagings
        # at once may both miss the full count: that batch goes out when the gathering ends.
        if waiting and (waiting in (1, request.batch_size) or activity.info().attempt > 1):
            workflow_id = message_batches_workflow_id(generate.job_id)
            if not await signal_if_running(self._temporal, workflow_id, REQUESTS_WAITING_SIGNAL, waiting):
                log.warning("no Message Batches workflow runs for the job", job_id=str(generate.job_id))
        return custom_id

    # --- a batch ---------------------------------------------------------------------------

    @activity.defn(name="submit_message_batch")
    async def submit_batch(self, request: SubmitBatchInput) -> SubmittedBatch:
        """Claims the job's waiting requests for the batch the workflow named, then creates it at
        the API once: a retry finds the id recorded, or, when the earlier create's outcome is
        unknown (no answer came), adopts a batch it may have made (see _candidates; poll_batch
        proves it ours by its results)."""
        async with heartbeating(str(request.message_batch_id)):
            return await self._submit(request)

    async def _submit(self, request: SubmitBatchInput) -> SubmittedBatch:
        import anthropic

        claim = await self._claim(request)
        claimed, remaining = claim.requests, claim.remaining
        if claim.anthropic_batch_id:
            return SubmittedBatch(anthropic_batch_id=claim.anthropic_batch_id, request_count=len(claimed), remaining=remaining)
        if not claimed:
            return SubmittedBatch(anthropic_batch_id=None, remaining=remaining)
        if claim.create_sent_at is not None:  # an earlier create may have made the batch
            candidates = await self._candidates(len(claimed), claim.create_sent_at, exclude=[])
            if candidates:
                adopted = candidates[0].id
                log.warning("adopting the batch an earlier attempt may have created", anthropic_batch_id=adopted)
                await self._record_created(request.message_batch_id, adopted, adopted=True)
                return SubmittedBatch(anthropic_batch_id=adopted, request_count=len(claimed), remaining=remaining)
        requests = await self._read_requests(key for _, key in claimed)
        await self._set_create_sent_at(request.message_batch_id, datetime.now(UTC))
        try:
            batch = await self._claude.messages.batches.create(requests=requests)
        except anthropic.APIError as exc:
            if _answered_without_a_batch(exc):
                await self._set_create_sent_at(request.message_batch_id, None)
            failure = self._failure(exc)
            if getattr(failure, "non_retryable", False):
                # The API refuses the batch itself (not one request): its items fail with the reason.
                await self._fail_requests(request.message_batch_id, [custom_id for custom_id, _ in claimed], failure)
                return SubmittedBatch(anthropic_batch_id=None, remaining=remaining)
            raise failure from None
        await self._record_created(request.message_batch_id, batch.id, adopted=False)
        log.info("message batch created", job_id=str(request.job_id), anthropic_batch_id=batch.id, requests=len(claimed))
        return SubmittedBatch(anthropic_batch_id=batch.id, request_count=len(claimed), remaining=remaining)

    async def _claim(self, request: SubmitBatchInput) -> _Claim:
        """Claims the job's waiting requests for the batch, or finds those an earlier attempt
        claimed. Staging waits while a claim runs, so every request is claimed, counted in
        `remaining`, or staged after it (the workflow keeps what those tell it meanwhile)."""
        async with self._sessions.begin() as session:
            await session.execute(_REQUESTS_CLAIMED, {"job": str(request.job_id)})
            inserted = await session.execute(
                upsert(MessageBatch)
                .values(
                    id=request.message_batch_id,
                    batch_job_id=request.job_id,
                    status=MessageBatchState.SUBMITTING.value,
                    submitted_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            retried = inserted.rowcount == 0
            batch = await session.get(MessageBatch, request.message_batch_id, with_for_update=True)
            if not retried:
                waiting = (
                    await session.execute(
                        select(MessageBatchRequest.custom_id, MessageBatchRequest.request_bytes)
                        .where(*_waiting_for_a_batch(request.job_id))
                        .order_by(MessageBatchRequest.created_at)
                        .limit(request.max_requests)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                chosen: list[str] = []
                total_bytes = 0
                for custom_id, size in waiting:
                    if chosen and total_bytes + size > request.max_bytes:
                        break
                    chosen.append(custom_id)
                    total_bytes += size
                if chosen:
                    await session.execute(
                        update(MessageBatchRequest)
                        .where(MessageBatchRequest.custom_id.in_(chosen))
                        .values(message_batch_id=request.message_batch_id)
                    )
                    batch.request_count = len(chosen)
                else:
                    await session.execute(delete(MessageBatch).where(MessageBatch.id == request.message_batch_id))
            claimed = (
                await session.execute(
                    select(MessageBatchRequest.custom_id, MessageBatchRequest.request_key)
                    .where(MessageBatchRequest.message_batch_id == request.message_batch_id)
                    .order_by(MessageBatchRequest.created_at)
                )
            ).all()
            remaining = await session.scalar(select(func.count()).where(*_waiting_for_a_batch(request.job_id))) or 0
            unknown = batch.create_sent_at if batch.anthropic_batch_id is None else None
            return _Claim([(custom_id, key) for custom_id, key in claimed], batch.anthropic_batch_id, unknown, remaining)

    async def _read_requests(self, keys: Iterable[str]) -> list[Request]:
        limit = asyncio.Semaphore(SIGNALS_AT_ONCE)

        async def read(key: str) -> Request:
            async with limit:
                return json.loads(await self._storage.get_bytes(self._storage.conversation_bucket, key))

        return list(await asyncio.gather(*(read(key) for key in keys)))

    async def _set_create_sent_at(self, message_batch_id: uuid.UUID, at: datetime | None) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(MessageBatch).where(MessageBatch.id == message_batch_id).values(create_sent_at=at))

    async def _candidates(self, request_count: int, sent_at: datetime, exclude: Iterable[str]) -> list[Any]:
        """Batches a create sent at `sent_at` whose outcome is unknown may have made: of the
        workspace's batches (any user's) created within the window either side of it, as many
        requests, recorded for no batch of ours and not `exclude`d, nearest first. Size and time
        only make a candidate: the API shows a batch's requests only in its results."""
        import anthropic

        since, until = sent_at - ADOPTION_WINDOW, sent_at + ADOPTION_WINDOW
        excluded = set(exclude)
        candidates = []
        try:
            async for listed in self._claude.messages.batches.list(limit=100):
                if listed.created_at < since:
                    break
                counts = listed.request_counts
                size = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                if listed.created_at <= until and size == request_count and listed.id not in excluded:
                    candidates.append(listed)
        except anthropic.APIError as exc:
            raise self._failure(exc) from None
        if not candidates:
            return []
        async with self._sessions() as session:
            recorded = set(
                (
                    await session.scalars(
                        select(MessageBatch.anthropic_batch_id).where(
                            MessageBatch.anthropic_batch_id.in_([c.id for c in candidates])
                        )
                    )
                ).all()
            )
        unrecorded = [c for c in candidates if c.id not in recorded]
        return sorted(unrecorded, key=lambda c: abs(c.created_at - sent_at))

    async def _record_created(self, message_batch_id: uuid.UUID, anthropic_batch_id: str, *, adopted: bool) -> None:
        async with self._sessions.begin() as session:
            if not adopted:
                # Our create's answer proves the batch ours: a batch of ours that adopted it from
                # the listing meanwhile lets it go (its results will not name its requests).
                await session.execute(
                    update(MessageBatch)
                    .where(
                        MessageBatch.anthropic_batch_id == anthropic_batch_id,
                        MessageBatch.id != message_batch_id,
                        MessageBatch.adopted_at.is_not(None),
                    )
                    .values(anthropic_batch_id=None)
                )
            await session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == message_batch_id)
                .values(
                    anthropic_batch_id=anthropic_batch_id,
                    status=MessageBatchState.IN_PROGRESS.value,
                    adopted_at=datetime.now(UTC) if adopted else None,
                )
            )

    async def _fail_requests(self, message_batch_id: uuid.UUID, custom_ids: list[str], failure: Exception) -> None:
        message = getattr(failure, "message", str(failure))
        log.error("the API refused a message batch", error=message, requests=len(custom_ids))
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(MessageBatchRequest.custom_id, MessageBatchRequest.batch_item_id).where(
                        MessageBatchRequest.custom_id.in_(custom_ids)
                    )
                )
            ).all()
            await session.execute(
                update(MessageBatchRequest)
                .where(MessageBatchRequest.custom_id.in_(custom_ids))
                .values(result_type=BatchResultType.ERRORED.value)
            )
            await session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == message_batch_id)
                .values(status=MessageBatchState.ENDED.value, ended_at=datetime.now(UTC))
            )
        await self._announce(
            [
                (
                    item_id,
                    BatchResult(
                        custom_id=custom_id,
                        result_type=BatchResultType.ERRORED,
                        error_type=ANTHROPIC_INVALID_REQUEST,
                        error_message=message,
                    ),
                )
                for custom_id, item_id in rows
            ]
        )

    @activity.defn(name="poll_message_batch")
    async def poll_batch(self, ref: MessageBatchRef) -> PolledBatch:
        """The batch's status. One the API no longer knows (deleted in the console) ends here: its
        open requests count as expired (the items send them again, within their attempt cap). One
        still open past its expiry is cancelled and polled until it ends. An adopted batch that
        has ended is proved ours by its results, or another candidate is taken (see _prove)."""
        import anthropic

        async with self._sessions() as session:
            row = await session.get(MessageBatch, ref.message_batch_id)
        if row.adopted_at is not None and row.status == MessageBatchState.ENDED.value:
            return PolledBatch(status=MessageBatchState.ENDED)  # released, or left by a cancel
        ref = ref.model_copy(update={"anthropic_batch_id": row.anthropic_batch_id or ref.anthropic_batch_id})
        try:
            async with heartbeating(ref.anthropic_batch_id):
                batch = await self._claude.messages.batches.retrieve(ref.anthropic_batch_id)
        except anthropic.NotFoundError:
            log.warning("the API does not know the message batch (deleted?)", anthropic_batch_id=ref.anthropic_batch_id)
            await self._end_without_results(ref)
            return PolledBatch(status=MessageBatchState.ENDED)
        except anthropic.APIError as exc:
            raise self._failure(exc) from None
        if batch.processing_status != "ended" and datetime.now(UTC) > batch.expires_at + OVERDUE_MARGIN:
            if row.adopted_at is not None:  # never cancelled: it may be another's
                log.warning("an adopted message batch is still open past its expiry", anthropic_batch_id=ref.anthropic_batch_id)
                await self._release(ref)
                return PolledBatch(status=MessageBatchState.ENDED)
            if batch.cancel_initiated_at is None:
                log.warning("message batch still open past its expiry", anthropic_batch_id=ref.anthropic_batch_id)
                await self._cancel(ref)
            elif datetime.now(UTC) > batch.cancel_initiated_at + OVERDUE_MARGIN:
                log.warning("message batch still open long after its cancel", anthropic_batch_id=ref.anthropic_batch_id)
                await self._end_without_results(ref)
                return PolledBatch(status=MessageBatchState.ENDED)
            # Polled until it ends: what had finished keeps its result, what had not expires.
        if batch.processing_status == "ended" and row.adopted_at is not None:
            proved = await self._prove(ref, row)
            if proved is not None:
                return proved
        counts = batch.request_counts.model_dump()
        async with self._sessions.begin() as session:
            await session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == ref.message_batch_id)
                .values(status=batch.processing_status, request_counts=counts, ended_at=batch.ended_at)
            )
        return PolledBatch(status=MessageBatchState(batch.processing_status), request_counts=counts)

    async def _prove(self, ref: MessageBatchRef, row: MessageBatch) -> PolledBatch | None:
        """An adopted batch has ended: its first result tells whose it is (custom_ids name our
        items). Ours: None, and its results are stored as any batch's. Another's: the next
        unrecorded same-size candidate of the window is checked the same way (an ended one at
        once, an open one by polling it instead), at most ADOPTION_CHECKS in all; none left,
        our requests go back to waiting for a batch of their own."""
        async with self._sessions() as session:
            ours = set(
                (
                    await session.scalars(
                        select(MessageBatchRequest.custom_id).where(MessageBatchRequest.message_batch_id == ref.message_batch_id)
                    )
                ).all()
            )
        foreign = list(row.foreign_batch_ids)
        checking = ref.anthropic_batch_id
        # No id on the row: another batch of ours recorded it from its create's answer.
        if row.anthropic_batch_id is not None and await self._names_ours(checking, ours):
            await self._adopt(ref, checking, foreign, proved=True)
            return None
        while True:
            log.warning("the adopted message batch is not ours: its results name none of our requests", anthropic_batch_id=checking)
            foreign.append(checking)
            left = ADOPTION_CHECKS - len(foreign)
            candidates = [] if left <= 0 or row.create_sent_at is None else await self._candidates(len(ours), row.create_sent_at, foreign)
            if not candidates:
                await self._adopt(ref, None, foreign, proved=False)
                await self._release(ref)
                return PolledBatch(status=MessageBatchState.ENDED)
            checking = candidates[0].id
            log.warning("adopting another candidate for the batch our create may have made", anthropic_batch_id=checking)
            if candidates[0].processing_status != "ended":
                await self._adopt(ref, checking, foreign, proved=False)
                return PolledBatch(status=MessageBatchState(candidates[0].processing_status))
            if await self._names_ours(checking, ours):  # _candidates left out what ours recorded
                await self._adopt(ref, checking, foreign, proved=True)
                counts = candidates[0].request_counts.model_dump()
                async with self._sessions.begin() as session:
                    await session.execute(
                        update(MessageBatch)
                        .where(MessageBatch.id == ref.message_batch_id)
                        .values(status=MessageBatchState.ENDED.value, request_counts=counts, ended_at=candidates[0].ended_at)
                    )
                return PolledBatch(status=MessageBatchState.ENDED, request_counts=counts)

    async def _names_ours(self, anthropic_batch_id: str, ours: set[str]) -> bool:
        """Whether the batch's results name our requests; its first line tells (custom_ids are
        unique across every job), the rest is never downloaded."""
        import anthropic

        try:
            results = await self._claude.messages.batches.results(anthropic_batch_id)
        except anthropic.NotFoundError:
            return False
        except anthropic.APIError as exc:
            raise self._failure(exc) from None
        try:
            async for line in results:
                return line.custom_id in ours
        except anthropic.APIError as exc:
            raise self._failure(exc) from None
        finally:
            await results.close()
        return False

    async def _adopt(self, ref: MessageBatchRef, anthropic_batch_id: str | None, foreign: list[str], *, proved: bool) -> None:
        """Records the candidate the batch now stands for (None: keeps the last one) and the
        candidates proved another's."""
        values: dict[str, Any] = {"foreign_batch_ids": foreign}
        if anthropic_batch_id is not None:
            values["anthropic_batch_id"] = anthropic_batch_id
        if proved:
            values["adopted_at"] = None
        async with self._sessions.begin() as session:
            await session.execute(update(MessageBatch).where(MessageBatch.id == ref.message_batch_id).values(**values))

    @activity.defn(name="store_message_batch_results")
    async def store_results(self, ref: MessageBatchRef) -> int:
        """Streams an ended batch's results: each reply goes to storage where an online call's
        would, each result onto its request's row, for announce_results to hand out. A retry
        stores only the requests still without a result (results come in no documented order).
        A request the results leave out counts as expired. An adopted batch whose results name
        none of our requests is another's: our requests wait for a batch of their own, and the
        workflow hears of them from every attempt (one may have died after releasing them)."""
        async with self._sessions() as session:
            row = await session.get(MessageBatch, ref.message_batch_id)
            requests = {
                request.custom_id: request
                for request in (
                    await session.execute(
                        select(MessageBatchRequest).where(MessageBatchRequest.message_batch_id == ref.message_batch_id)
                    )
                ).scalars()
            }
        adopted, released = row.adopted_at is not None, row.released_at is not None
        ref = ref.model_copy(update={"anthropic_batch_id": row.anthropic_batch_id or ref.anthropic_batch_id})
        pending = {custom_id for custom_id, request in requests.items() if request.result is None}
        named_ours = False
        chunk: list[BatchResult] = []
        if pending and not released:
            async with heartbeating(ref.anthropic_batch_id):
                async for line, responder in self._results(ref.anthropic_batch_id):
                    staged = requests.get(line.custom_id)
                    if staged is None:
                        log.warning("a result for a request this batch did not have", custom_id=line.custom_id)
                        continue
                    named_ours = True
                    if line.custom_id not in pending:
                        continue  # stored by an earlier attempt
                    pending.discard(line.custom_id)
                    chunk.append(await self._result(ref, staged, line, responder))
                    if len(chunk) >= RESULTS_CHUNK:
                        await self._record(chunk)
                        chunk = []
                await self._record(chunk)
            if adopted and not named_ours:
                await self._release(ref)
                released = True
            elif pending:
                log.warning("results missing for requests of the batch: they count as expired", requests=len(pending))
                await self._record([BatchResult(custom_id=c, result_type=BatchResultType.EXPIRED) for c in sorted(pending)])
        if released:
            await self._tell_waiting(ref.job_id)
            return 0
        async with self._sessions.begin() as session:
            await session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == ref.message_batch_id)
                .values(results_collected_at=datetime.now(UTC), **({"adopted_at": None} if named_ours else {}))
            )
        log.info("message batch results stored", job_id=str(ref.job_id), anthropic_batch_id=ref.anthropic_batch_id)
        return len(requests)

    async def _release(self, ref: MessageBatchRef) -> None:
        """An adopted batch proved another's (or could not be proved ours): our requests go back
        to waiting (no attempt of their items is spent). store_results tells the workflow."""
        log.warning("our requests wait for a batch of their own", anthropic_batch_id=ref.anthropic_batch_id)
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            await session.execute(_REQUESTS_CLAIMED, {"job": str(ref.job_id)})
            await session.execute(
                update(MessageBatchRequest)
                .where(
                    MessageBatchRequest.message_batch_id == ref.message_batch_id,
                    MessageBatchRequest.result_type.is_(None),
                )
                .values(message_batch_id=None)
            )
            await session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == ref.message_batch_id)
                .values(status=MessageBatchState.ENDED.value, request_count=0, results_collected_at=now, released_at=now)
            )

    async def _tell_waiting(self, job_id: uuid.UUID) -> None:
        """Tells the job's Message Batches workflow how many requests wait for a batch."""
        async with self._sessions() as session:
            waiting = await session.scalar(select(func.count()).where(*_waiting_for_a_batch(job_id))) or 0
        if waiting:
            await signal_if_running(self._temporal, message_batches_workflow_id(job_id), REQUESTS_WAITING_SIGNAL, waiting)

    async def _end_without_results(self, ref: MessageBatchRef, kind: BatchResultType = BatchResultType.EXPIRED) -> None:
        """The batch ends with no results to come: each of its requests without one expired (or
        `kind`)."""
        async with self._sessions.begin() as session:
            open_requests = (
                await session.scalars(
                    select(MessageBatchRequest.custom_id).where(
                        MessageBatchRequest.message_batch_id == ref.message_batch_id,
                        MessageBatchRequest.result.is_(None),
                    )
                )
            ).all()
            await session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == ref.message_batch_id)
                .values(status=MessageBatchState.ENDED.value, ended_at=datetime.now(UTC))
            )
        await self._record([BatchResult(custom_id=c, result_type=kind) for c in open_requests])

    @activity.defn(name="announce_message_batch_results")
    async def announce_results(self, request: AnnounceBatchResults) -> int:
        """Hands up to `limit` stored results of the batch to their items; returns 1 while any are
        left, else 0. Announcing twice is harmless (an item takes the first result of a request)."""
        unannounced = (
            MessageBatchRequest.message_batch_id == request.ref.message_batch_id,
            MessageBatchRequest.result.is_not(None),
            MessageBatchRequest.announced_at.is_(None),
        )
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(MessageBatchRequest.custom_id, MessageBatchRequest.batch_item_id, MessageBatchRequest.result)
                    .where(*unannounced)
                    .order_by(MessageBatchRequest.custom_id)
                    .limit(request.limit + 1)  # one more tells whether any is left
                )
            ).all()
        rows = found[: request.limit]
        async with heartbeating(request.ref.anthropic_batch_id):
            await self._announce([(item_id, BatchResult.model_validate(result)) for _, item_id, result in rows])
        async with self._sessions.begin() as session:
            await session.execute(
                update(MessageBatchRequest)
                .where(MessageBatchRequest.custom_id.in_([custom_id for custom_id, _, _ in rows]))
                .values(announced_at=datetime.now(UTC))
            )
        return len(found) - len(rows)

    @activity.defn(name="collect_message_batch_results")
    async def collect_results(self, ref: MessageBatchRef) -> int:
        """Stores and announces all of a batch's results in one step: what runs started before
        results were announced in steps still call."""
        collected = await self.store_results(ref)
        while await self.announce_results(AnnounceBatchResults(ref=ref, limit=RESULTS_CHUNK)):
            pass
        return collected

    async def _results(self, anthropic_batch_id: str) -> AsyncIterator[tuple[Any, Responder]]:
        """The batch's result lines, each with who sent them; none when the API no longer has them
        (deleted, archived)."""
        import anthropic

        try:
            lines = await self._claude.messages.batches.results(anthropic_batch_id)
            responder = answered_by(lines.http_response)
            async for line in lines:
                yield line, responder
        except anthropic.NotFoundError:
            log.warning("the API has no results for the message batch", anthropic_batch_id=anthropic_batch_id)
        except anthropic.APIError as exc:
            raise self._failure(exc) from None

    async def _result(self, ref: MessageBatchRef, staged: MessageBatchRequest, line: Any, responder: Responder) -> BatchResult:
        result = line.result
        kind = BatchResultType(result.type)
        if kind == BatchResultType.ERRORED:
            error = result.error.error
            return BatchResult(custom_id=staged.custom_id, result_type=kind, error_type=error.type, error_message=error.message)
        if kind != BatchResultType.SUCCEEDED:
            return BatchResult(custom_id=staged.custom_id, result_type=kind)
        message = result.message
        usage = priced_usage(self._prices, self._settings, message.model, message.usage, batch=True)
        document = {
            **staged.details,
            "generated_by": responder.provider.value,
            "message_batch_id": ref.anthropic_batch_id,
            "custom_id": staged.custom_id,
            "message": message.model_dump(mode="json"),
        }
        await self._storage.put_json(self._storage.conversation_bucket, staged.raw_key, document)
        sequence = int(staged.custom_id.rsplit("-", 1)[1])
        generated = GeneratedRaw(
            raw_key=staged.raw_key,
            model=message.model,
            stop_reason=message.stop_reason,
            usage=usage,
            latency_ms=0,
            attempt=sequence,
            provider=responder.provider,
            provider_host=responder.host,
        )
        return BatchResult(custom_id=staged.custom_id, result_type=kind, generated=generated)

    async def _record(self, results: list[BatchResult]) -> None:
        if results:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(MessageBatchRequest),
                    [
                        {"custom_id": r.custom_id, "result_type": r.result_type.value, "result": r.model_dump(mode="json")}
                        for r in results
                    ],
                )

    async def _announce(self, results: list[tuple[uuid.UUID, BatchResult]]) -> None:
        limit = asyncio.Semaphore(SIGNALS_AT_ONCE)

        async def signal(item_id: uuid.UUID, result: BatchResult) -> None:
            async with limit:
                if not await signal_if_running(self._temporal, item_workflow_id(item_id), BATCH_RESULT_SIGNAL, result):
                    # It ended meanwhile (its job was cancelled): nothing waits for this result.
                    log.info("item no longer waits for its batch result", item_id=str(item_id))

        await asyncio.gather(*(signal(item_id, result) for item_id, result in results))

    @activity.defn(name="check_batch_request")
    async def check_request(self, request: CheckBatchRequest) -> CheckedBatchRequest:
        """For an item that has waited long for its request's result: the result if one was
        stored, and whether the job's Message Batches workflow still runs to bring it."""
        async with self._sessions() as session:
            stored = await session.scalar(
                select(MessageBatchRequest.result).where(MessageBatchRequest.custom_id == request.custom_id)
            )
        try:
            described = await self._temporal.get_workflow_handle(message_batches_workflow_id(request.job_id)).describe()
            running = described.status == WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            running = False
        return CheckedBatchRequest(result=BatchResult.model_validate(stored) if stored else None, batches_running=running)

    @activity.defn(name="cancel_message_batches")
    async def cancel_batches(self, job_id: uuid.UUID) -> int:
        """Asks the API to cancel the job's open batches; they end soon after, and what had
        finished by then keeps its result. Requests still waiting for a batch end cancelled: no
        later batch (of a retry of the job) sends them. An adopted batch not yet proved ours is
        not cancelled at the API (it may be another's): it ends here, its requests cancelled."""
        async with self._sessions.begin() as session:
            await session.execute(_REQUESTS_CLAIMED, {"job": str(job_id)})
            await session.execute(
                update(MessageBatchRequest)
                .where(*_waiting_for_a_batch(job_id))
                .values(result_type=BatchResultType.CANCELED.value)
            )
        async with self._sessions() as session:
            open_ids = (
                await session.execute(
                    select(MessageBatch.id, MessageBatch.anthropic_batch_id, MessageBatch.adopted_at).where(
                        MessageBatch.batch_job_id == job_id,
                        MessageBatch.anthropic_batch_id.is_not(None),
                        MessageBatch.status == MessageBatchState.IN_PROGRESS.value,
                    )
                )
            ).all()
        for message_batch_id, anthropic_batch_id, adopted_at in open_ids:
            ref = MessageBatchRef(job_id=job_id, message_batch_id=message_batch_id, anthropic_batch_id=anthropic_batch_id)
            if adopted_at is None:
                await self._cancel(ref)
            else:
                await self._end_without_results(ref, BatchResultType.CANCELED)
        return len(open_ids)

    async def _cancel(self, ref: MessageBatchRef) -> None:
        """Cancels the batch at the API, unless it was adopted and not yet proved ours (it may be
        another user's) or the API no longer knows it."""
        import anthropic

        async with self._sessions() as session:
            if (await session.get(MessageBatch, ref.message_batch_id)).adopted_at is not None:
                log.warning("an adopted message batch is not cancelled", anthropic_batch_id=ref.anthropic_batch_id)
                return
        try:
            async with heartbeating(ref.anthropic_batch_id):
                batch = await self._claude.messages.batches.cancel(ref.anthropic_batch_id)
        except anthropic.NotFoundError:
            return  # deleted: the next poll ends it
        except anthropic.APIError as exc:
            raise self._failure(exc) from None
        async with self._sessions.begin() as session:
            await session.execute(
                update(MessageBatch).where(MessageBatch.id == ref.message_batch_id).values(status=batch.processing_status)
            )
