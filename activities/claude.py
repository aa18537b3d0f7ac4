"""The Claude call. One layer owns retries (Temporal): the SDK makes none, every attempt is a
fresh request, and the raw response is in storage before the activity returns its reference."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.claude_pacing import HANDED_OVER_TURN_GRACE_S, CallPacer, TurnTooFar
from activities.claude_requests import ClaudeRequest, call_shape, priced_usage, raw_response_document, request_text
from activities.data_errors import classify as classify_data_error
from activities.errors import (
    ANTHROPIC_REFUSED,
    CLAUDE_CONNECTION,
    CLAUDE_RATE_LIMIT_WAIT,
    CLAUDE_UNEXPECTED_ERROR,
    claude_http_error,
)
from brightrun.claude_client import answered_by
from brightrun.logs import get_logger
from brightrun.pricing import PriceTable
from brightrun.settings import CLAUDE_STORAGE_MARGIN_S, Settings
from brightrun.storage import Storage
from models.messages import CallProgress, GeneratedRaw, GenerateInput, JudgeInput, PaidReply, RefusalDetails

if TYPE_CHECKING:
    # The SDK takes over a second to import. The workflows name these activities, and the command
    # line imports the workflows, so the SDK is imported where a call is made, not with the module.
    import anthropic
    from anthropic import AsyncAnthropic

log = get_logger(__name__)
T = TypeVar("T")

# HTTP statuses a later attempt can get past; every other 4xx is a request that will never work.
_TRANSIENT_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
# The HTTP status the API gives each error type of its error body. An error that arrives inside a
# stream, after HTTP 200, is classified as its type's status; a type not listed as an api_error.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_RATE_LIMIT_HEADER_PREFIX = "anthropic-ratelimit-"
HEARTBEAT_EVERY_S = 5.0  # at most; a third of the heartbeat timeout when that is shorter
# The Claude worker sends a heartbeat at most this late (its throttle). The server keeps the last
# heartbeat's details for the next attempt, but may drop one that arrives with the failure, so
# a failed attempt that spent tokens fails only once the heartbeat counting them has gone out.
HEARTBEAT_THROTTLE = timedelta(seconds=1)
_HEARTBEAT_SENT_S = 2 * HEARTBEAT_THROTTLE.total_seconds()
CONNECT_TIMEOUT_S = 10.0
# A refused call is tried again with this backoff (and no earlier than a retry-after) until the
# key or limit is fixed: soon enough to go on within about a minute of the fix.
REFUSAL_RETRY_BASE_S = 5.0
REFUSAL_RETRY_CAP_S = 60.0
# A paid reply's upload (and the prompt's read, and the turn at the calls-per-minute limit) is
# retried through an outage with this backoff, while the attempt has room for one more try; then
# the next attempt stores the reply from the heartbeat details.
OUTAGE_RETRY_FIRST_S = 1.0
OUTAGE_RETRY_CAP_S = 15.0
OUTAGE_TRY_S = 10.0


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> timedelta:
    """Exponential backoff with jitter, so a burst of failures does not retry in lockstep."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """How long the API asks to wait: `retry-after-ms` when it says, else `retry-after` (seconds)."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    return _number(headers.get("retry-after"))


def refusal_reason(exc: anthropic.APIStatusError) -> str | None:
    """What Anthropic said when it refused the account (not this request), else None."""
    if not is_account_refusal(exc):
        return None
    code = f", {exc.error_code}" if exc.error_code else ""
    error = _error_body(exc)
    return f"{error.get('message') or exc.message} ({exc.status_code} {error.get('type', 'error')}{code})"


def _error_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    return error if isinstance(error, dict) else {}


def _api_error(exc: anthropic.APIStatusError) -> str:
    """The message of Anthropic's error body and its type, else what the SDK says."""
    error = _error_body(exc)
    if error.get("message"):
        return f"{error['message']} ({error.get('type', 'error')})"
    return exc.message


def _status_of(exc: anthropic.APIStatusError) -> int:
    """The HTTP status, or for an error inside a stream that had answered 200, its type's."""
    if exc.status_code >= 400:
        return exc.status_code
    return _STATUS_OF_ERROR_TYPE.get(_error_body(exc).get("type", ""), 500)


def _transport_problem(exc: Exception) -> str:
    """What broke on the wire: the SDK's connection error says little, its cause says what."""
    import anthropic

    cause = exc.__cause__ if isinstance(exc, anthropic.APIConnectionError) and exc.__cause__ else exc
    return f"{cause.__class__.__name__}: {cause}" if str(cause) else cause.__class__.__name__


# `error.details.error_code`s that refuse the account, not the request (anthropic types/shared).
_ACCOUNT_REFUSAL_CODES = {
    "enforced_spend_limit_reached",
    "contract_spend_limit_reached",
    "organization_on_hold",
    "linked_organization_billing_unavailable",
    "linked_organization_spend_limit_reached",
    # The workspace's customer-managed encryption key: disabled, unreachable or blocked until
    # the operator fixes it (400s, whose docs say to fix the key, then retry).
    "cmek_key_disabled",
    "cmek_key_unreachable",
    "cmek_key_network_blocked",
    "cmek_context_unavailable",
}


def is_account_refusal(exc: anthropic.APIStatusError) -> bool:
    """Anthropic refuses the account (key, permission, billing, spend limit), not the request: no
    request of ours fixes it, the operator does. Told by the SDK's typed errors and error_code."""
    import anthropic

    refusal_status = isinstance(
        exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError | anthropic.PaymentRequiredError
    )
    return refusal_status or exc.error_code in _ACCOUNT_REFUSAL_CODES


def classify_failure(
    exc: Exception, attempt: int, max_attempts: int, settings: Settings, details: Sequence[object] = ()
) -> ApplicationError:
    """Turn an SDK or transport error into the failure Temporal should act on: retry when, or
    never. `attempt` is the number of requests sent so far (this one included); the last allowed
    one fails for good, saying so. `details` travel with it. Refusals of the account are
    refused_failure's."""
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        status = _status_of(exc)
        error_type = claude_http_error(status)
        if status == exc.status_code:
            message = f"Claude API {status}: {_api_error(exc)}"
        else:
            message = f"Claude API error mid-stream (after HTTP {exc.status_code}): {_api_error(exc)}"
        if status not in _TRANSIENT_STATUSES:
            return ApplicationError(message, *details, type=error_type, non_retryable=True)
        delay = backoff_delay(attempt, settings.claude_retry_base_s, settings.claude_retry_cap_s)
        retry_after = retry_after_s(exc.response.headers)
        if retry_after is not None:
            delay = max(delay, timedelta(seconds=retry_after))
    elif isinstance(exc, RateLimitWaitTooLong):
        # No request went out: waiting is no attempt, however long.
        delay = max(
            timedelta(seconds=exc.wait_s),
            backoff_delay(max(1, attempt), settings.claude_retry_base_s, settings.claude_retry_cap_s),
        )
        return ApplicationError(str(exc), *details, type=CLAUDE_RATE_LIMIT_WAIT, next_retry_delay=delay)
    elif isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):  # timeouts included
        # The SDK raises the transport's own error when the connection breaks inside a stream.
        error_type = CLAUDE_CONNECTION
        message = f"Claude API connection failed: {_transport_problem(exc)}"
        delay = backoff_delay(attempt, settings.claude_retry_base_s, settings.claude_retry_cap_s)
    else:
        raise exc
    if attempt >= max_attempts:
        return ApplicationError(
            f"gave up after {attempt} attempts; last error: {message}", *details, type=error_type, non_retryable=True
        )
    return ApplicationError(message, *details, type=error_type, next_retry_delay=delay)


def refused_failure(
    exc: anthropic.APIStatusError, reason: str, progress: CallProgress, details: Sequence[object] = ()
) -> ApplicationError:
    """Anthropic refused the account: the item waits, retried without an attempt cap, until the
    operator fixes the key or the limit; no sooner than a retry-after."""
    delay = backoff_delay(progress.refusals, REFUSAL_RETRY_BASE_S, REFUSAL_RETRY_CAP_S)
    retry_after = retry_after_s(exc.response.headers)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return ApplicationError(
        f"Anthropic refused: {reason}; the item waits until the key or limit is fixed",
        RefusalDetails(reason=reason, since=progress.refused_since),
        *details,
        type=ANTHROPIC_REFUSED,
        next_retry_delay=delay,
    )


class RateLimitGate:
    """Paces a worker's calls by the anthropic-ratelimit-* headers of the answers.

    The request budget above the low watermark is spent as calls start: an answer tells the
    budget as it was when its request arrived, so the calls this worker started after that one
    count against it (with Claude's 30-60 s answers, dozens), and an answer older than one
    already seen tells nothing new. Once it is spent, or a token budget is under the watermark,
    or a 429 said `retry-after`, calls go one at a time, each first waiting for the budget's
    reset (at most `max_wait_s`; then it tries, and a 429 says how long to wait), until an
    answer shows the budget back: a worker's calls do not rush the API the moment it refills."""

    BUDGETS = ("requests", "tokens", "input-tokens", "output-tokens")

    def __init__(self, low_watermark: float, max_wait_s: float, clock: Callable[[], float] = time.time) -> None:
        self._low_watermark = low_watermark
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._spare_requests: float | None = None  # unknown until the first answer
        self._requests_reset_at = 0.0
        self._calls_started = 0  # the index the next admitted call gets
        self._freshest_answer = -1  # the index of the latest-started call whose answer was seen
        self._held_until: float | None = None  # a low token budget's reset, or a 429's retry-after
        self._one_at_a_time = asyncio.Lock()

    def observe(self, headers: Mapping[str, str], call_index: int | None = None) -> None:
        """The answer's budgets decide; an answer without them (a 500, say) changes nothing.
        `call_index` is what admitted() gave its call (None: as if it started last)."""
        seen, holds = False, []
        retry_after = retry_after_s(headers)
        if retry_after is not None:
            seen = True
            holds.append(self._clock() + retry_after)
        for budget in self.BUDGETS:
            limit = _number(headers.get(f"{_RATE_LIMIT_HEADER_PREFIX}{budget}-limit"))
            remaining = _number(headers.get(f"{_RATE_LIMIT_HEADER_PREFIX}{budget}-remaining"))
            reset_at = _timestamp(headers.get(f"{_RATE_LIMIT_HEADER_PREFIX}{budget}-reset"))
            if not (limit and remaining is not None and reset_at):
                continue
            seen = True
            spare = remaining - limit * self._low_watermark
            if budget == "requests":
                index = self._calls_started - 1 if call_index is None else call_index
                if index >= self._freshest_answer:
                    started_since = self._calls_started - 1 - index
                    self._spare_requests, self._requests_reset_at = spare - started_since, reset_at
                    self._freshest_answer = index
            elif spare < 0:
                holds.append(reset_at)
        if seen:
            self._held_until = max(holds, default=None)

    def _hold(self) -> float | None:
        """None: the next call goes now, beside the others. Else it goes one at a time, from then."""
        if self._spare_requests is not None and self._spare_requests < 1:
            return max(self._requests_reset_at, self._held_until or 0.0)
        return self._held_until

    @property
    def low(self) -> bool:
        return self._hold() is not None

    def pause_s(self) -> float:
        """How long the next call waits before it goes."""
        hold = self._hold()
        return min(self._max_wait_s, max(0.0, hold - self._clock())) if hold is not None else 0.0

    def _start_call(self) -> int:
        if self._spare_requests is not None:
            self._spare_requests -= 1
        self._calls_started += 1
        return self._calls_started - 1

    @asynccontextmanager
    async def admitted(self, start_by: float = math.inf) -> AsyncIterator[int]:
        """Wrap one call, up to reading its answer's headers; gives the call's index, for
        observe(). A call that could not start by `start_by` (its turn and the budget's reset
        both count) raises RateLimitWaitTooLong at once instead of holding its attempt's slot."""
        if self.low:
            await self._take_turn(start_by)
            try:
                if self.low:  # still low once it is this call's turn
                    pause = self.pause_s()
                    if pause > 0 and self._clock() + pause > start_by:
                        raise RateLimitWaitTooLong(pause, "the budget's reset")
                    if pause > 0:
                        log.info("rate limit budget low: waiting for its reset", wait_s=round(pause, 1))
                        await asyncio.sleep(pause)
                    yield self._start_call()
                    return
            finally:
                self._one_at_a_time.release()
        yield self._start_call()


    async def _take_turn(self, start_by: float) -> None:
        """The one-at-a-time slot: at once when free, else by `start_by` or never."""
        if not self._one_at_a_time.locked():
            await self._one_at_a_time.acquire()
            return
        try:
            await asyncio.wait_for(self._one_at_a_time.acquire(), timeout=max(0.0, start_by - self._clock()))
        except TimeoutError:
            raise RateLimitWaitTooLong(self.pause_s(), "its turn among the held calls") from None


class RateLimitWaitTooLong(Exception):
    """The rate-limit gate would hold a call past the time its attempt allows."""

    def __init__(self, wait_s: float, waiting_for: str) -> None:
        super().__init__(
            f"rate limit budget low: waiting for {waiting_for} would outlast this attempt; retrying in {wait_s:.0f} s or later"
        )
        self.wait_s = wait_s


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _timestamp(value: str | None) -> float | None:
    """An RFC 3339 reset time as a Unix timestamp."""
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except ValueError:
        return None


def attempt_deadline() -> float:
    """This attempt's start-to-close deadline on the worker's monotonic clock, counted from now
    (called as the attempt begins). Not from the server's `started_time`: that is the Temporal
    server's clock, and a worker's clock a minute ahead of it would leave no call time to wait for
    its turn, one behind would let a wait run past the timeout."""
    timeout = activity.info().start_to_close_timeout
    return time.monotonic() + timeout.total_seconds() if timeout else math.inf


def seconds_left(deadline: float) -> float:
    return deadline - time.monotonic()


def _progress_of_earlier_attempts() -> CallProgress:
    details = activity.info().heartbeat_details
    return CallProgress.model_validate(details[0]) if details else CallProgress()


@asynccontextmanager
async def heartbeating(progress: object) -> AsyncIterator[None]:
    """Heartbeat while the call runs, also when no byte arrives: a lost worker is noticed within
    the heartbeat timeout, and a cancellation reaches the call promptly. Each beat carries the
    progress as it is then (the call's, or a batch's), which the next attempt reads."""
    timeout = activity.info().heartbeat_timeout
    every_s = min(HEARTBEAT_EVERY_S, timeout.total_seconds() / 3) if timeout else HEARTBEAT_EVERY_S

    async def beat() -> None:
        while True:
            activity.heartbeat(progress)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


def _max_attempts(request: ClaudeRequest, settings: Settings) -> int:
    """The requests the call may send (from the starter's settings); the worker's setting stands in
    for a call scheduled before the workflow said."""
    return request.max_attempts or settings.claude_max_attempts


class ClaudeActivities:
    def __init__(
        self, client: AsyncAnthropic, storage: Storage, pacer: CallPacer, settings: Settings, prices: PriceTable
    ) -> None:
        self._client = client
        self._storage = storage
        self._pacer = pacer
        self._settings = settings
        self._prices = prices
        self._gate = RateLimitGate(settings.claude_rate_limit_low_watermark, settings.claude_rate_limit_max_wait_s)

    async def _read_stored(
        self, request: ClaudeRequest, progress: CallProgress, deadline: float, key: str, digest: str | None
    ) -> bytes:
        """The prompt or a repair's rejected reply, read through a storage outage like the upload."""
        return await self._through_outage(
            request, progress, deadline, lambda: self._storage.get_bytes(self._storage.conversation_bucket, key, digest)
        )

    @activity.defn(name="generate_conversation")
    async def generate_conversation(self, request: GenerateInput) -> GeneratedRaw:
        return await self._answer(request)

    @activity.defn(name="judge_conversation")
    async def judge_conversation(self, request: JudgeInput) -> GeneratedRaw:
        """The judge's call: the same call as a generation's (pacing, rate limit, retries,
        attempts, usage), with the judge's model, the rubric and the forced verdict tool."""
        return await self._answer(request)

    async def _answer(self, request: ClaudeRequest) -> GeneratedRaw:
        progress = _progress_of_earlier_attempts()
        try:
            return await self._generate(request, progress)
        except ApplicationError:
            raise
        except Exception as exc:
            # The retry policy has no cap (waits are no attempts): an unknown failure is capped here.
            progress.unexpected_failures += 1
            activity.heartbeat(progress)
            await _heartbeat_sent(time.monotonic())
            if progress.unexpected_failures >= _max_attempts(request, self._settings):
                raise ApplicationError(
                    f"gave up after {progress.unexpected_failures} unexpected errors; last: {exc.__class__.__name__}: {exc}",
                    progress.usage,
                    type=CLAUDE_UNEXPECTED_ERROR,
                    non_retryable=True,
                ) from exc
            raise

    async def _generate(self, request: ClaudeRequest, progress: CallProgress) -> GeneratedRaw:
        deadline = attempt_deadline()
        async with heartbeating(progress):
            if progress.reply is None:
                reply = await self._call(request, progress, deadline)
                activity.heartbeat(progress)  # the paid reply, at once: a lost worker must not lose it
            else:
                reply = progress.reply
                _call_log(request).info("storing the reply an earlier attempt paid for", raw_key=reply.generated.raw_key)
            raw_digest = await self._through_outage(
                request,
                progress,
                deadline,
                lambda: self._storage.put_json(
                    self._storage.conversation_bucket, reply.generated.raw_key, reply.document, read_back_soon=True
                ),
            )
        call = reply.generated
        usage = call.usage
        _call_log(request).info(
            "claude call succeeded",
            model=call.model,
            latency_ms=call.latency_ms,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_tokens=usage.cache_creation_input_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cost_usd=round(usage.cost_usd, 6),
            attempts_cost_usd=round(progress.usage.cost_usd, 6),
            stop_reason=call.stop_reason,
            rate_limit=call.rate_limit,
        )
        # The usage of every attempt of this call, failed ones included: all of it was paid for.
        return call.model_copy(
            update={"usage": progress.usage, "attempt": activity.info().attempt, "raw_digest": raw_digest}
        )

    async def _call(self, request: ClaudeRequest, progress: CallProgress, deadline: float) -> PaidReply:
        """One fresh streamed request; its answer becomes (and is) the progress's paid reply. Its tokens
        count from the moment the API announces them, also when the call then fails; an SDK or
        transport error becomes the failure Temporal acts on, carrying the usage so far."""
        import anthropic
        import httpx2

        max_attempts = _max_attempts(request, self._settings)
        shape = call_shape(self._settings, request)
        if progress.requests_sent >= max_attempts:
            # A failure classified on the last allowed request fails for good, so the attempt that
            # sent it ended unclassified: by its timeout, or with its worker.
            raise ApplicationError(
                f"gave up after {progress.requests_sent} attempts; the last got no answer within its "
                "attempt (it timed out, or its worker was lost)",
                progress.usage,
                type=CLAUDE_CONNECTION,
                non_retryable=True,
            )
        spent_before, changed_at, call_index = progress.usage, None, None
        # The wait for the rate limit leaves the call and the upload their whole time.
        start_by = time.time() + seconds_left(deadline) - shape.timeout_s - CLAUDE_STORAGE_MARGIN_S
        try:
            # The turn first: the one the call's slot took is kept only a few ms past its time.
            turn_at = await self._turn(request, progress, deadline, start_by)
            text = await request_text(
                request, lambda key, digest: self._read_stored(request, progress, deadline, key, digest)
            )
            if time.monotonic() > turn_at + HANDED_OVER_TURN_GRACE_S:  # the read outlasted the turn
                turn_at = await self._turn(request, progress, deadline, start_by)
            await asyncio.sleep(max(0.0, turn_at - time.monotonic()))
            async with self._gate.admitted(start_by) as call_index:
                # Counted before it goes: a timeout or a lost worker after this still counts it.
                progress.requests_sent += 1
                activity.heartbeat(progress)
                started = changed_at = time.monotonic()
                async with self._client.messages.stream(
                    model=shape.model,
                    max_tokens=shape.max_tokens,
                    **text.params(shape),
                    extra_headers={"x-brightrun-item": str(request.item_id)},
                    timeout=anthropic.Timeout(shape.timeout_s, connect=CONNECT_TIMEOUT_S),
                ) as stream:
                    async for event in stream:
                        if event.type == "message_start":
                            announced = event.message
                            progress.usage = spent_before + priced_usage(
                                self._prices, self._settings, announced.model, announced.usage
                            )
                            changed_at = time.monotonic()
                            activity.heartbeat(progress)
                    message, headers = await stream.get_final_message(), stream.response.headers
                    responder = answered_by(stream.response)
                latency_ms = int((time.monotonic() - started) * 1000)
                self._gate.observe(headers, call_index)
        except (RateLimitWaitTooLong, anthropic.APIStatusError, anthropic.APIConnectionError, httpx2.TransportError) as exc:
            failure, changed = self._failure(request, progress, exc, call_index)
            await _heartbeat_sent(time.monotonic() if changed else changed_at)
            raise failure from None
        except Exception:
            await _heartbeat_sent(changed_at)  # Temporal retries it: the request must stay counted
            raise
        usage = priced_usage(self._prices, self._settings, message.model, message.usage)
        progress.usage = spent_before + usage
        rate_limit = _rate_limit_headers(headers)
        progress.reply = PaidReply(
            generated=GeneratedRaw(
                raw_key=shape.raw_key,
                model=message.model,
                stop_reason=message.stop_reason,
                usage=usage,
                latency_ms=latency_ms,
                attempt=activity.info().attempt,
                rate_limit=rate_limit,
                provider=responder.provider,
                provider_host=responder.host,
            ),
            document=raw_response_document(
                self._settings, request, message.model_dump(mode="json"), headers.get("request-id"), responder.provider,
                rate_limit=rate_limit,
            ),
        )
        return progress.reply

    async def _turn(self, request: ClaudeRequest, progress: CallProgress, deadline: float, start_by: float) -> float:
        """The call's turn at the calls-per-minute limit, as a time.monotonic() value. The row's
        clock decides the turn; this worker's only how long the call may wait for it."""
        try:
            starts_in = await self._through_outage(
                request, progress, deadline, lambda: self._pacer.turn_for_call(max_wait_s=start_by - time.time())
            )
        except TurnTooFar as exc:
            raise RateLimitWaitTooLong(exc.wait_s, "its turn at the calls-per-minute limit") from None
        return time.monotonic() + starts_in

    def _failure(
        self, request: ClaudeRequest, progress: CallProgress, exc: Exception, call_index: int | None
    ) -> tuple[ApplicationError, bool]:
        """The failure of this attempt, logged, with the usage of every attempt so far as its last
        detail; and whether the progress changed (heartbeated: the failure must wait for it). A
        refusal of the account gives back the attempt its request counted."""
        import anthropic

        rate_limit: dict[str, str] = {}
        reason = None
        if isinstance(exc, anthropic.APIStatusError):
            self._gate.observe(exc.response.headers, call_index)
            rate_limit = _rate_limit_headers(exc.response.headers)
            reason = refusal_reason(exc)
        changed = False
        if isinstance(exc, anthropic.APIStatusError) and reason is not None:
            progress.requests_sent -= 1
            progress.refusals += 1
            progress.refused_since = progress.refused_since or datetime.now(UTC)
            failure = refused_failure(exc, reason, progress, [progress.usage])
            changed = True
        else:
            if progress.refusals and not isinstance(exc, RateLimitWaitTooLong):
                progress.refusals, progress.refused_since, changed = 0, None, True
            failure = classify_failure(
                exc, progress.requests_sent, _max_attempts(request, self._settings), self._settings, [progress.usage]
            )
        if changed:
            activity.heartbeat(progress)
        _call_log(request).warning(
            "claude call failed",
            error=failure.message,
            error_type=failure.type,
            retry=not failure.non_retryable,
            retry_in_s=failure.next_retry_delay.total_seconds() if failure.next_retry_delay else None,
            rate_limit=rate_limit,
            attempts_cost_usd=round(progress.usage.cost_usd, 6),
            requests_sent=progress.requests_sent,
        )
        return failure, changed

    async def _through_outage(
        self, request: ClaudeRequest, progress: CallProgress, deadline: float, operation: Callable[[], Awaitable[T]]
    ) -> T:
        """A storage or database operation, retried through an outage while the attempt has room
        for one more try; then the attempt ends as the outage (retryable) and the paid reply, if
        there is one, waits in the heartbeat details for the next attempt to store instead of
        paying for a new call. A refusal fails at once."""
        delay = OUTAGE_RETRY_FIRST_S
        while True:
            try:
                return await operation()
            except Exception as exc:
                failure = classify_data_error(exc)
                if failure is None:
                    raise
                if failure.non_retryable:
                    raise ApplicationError(
                        failure.message, *failure.details, progress.usage, type=failure.type, non_retryable=True
                    ) from None
                if seconds_left(deadline) < delay + OUTAGE_TRY_S:
                    kept = "; the paid reply is kept for the next attempt" if progress.reply else ""
                    raise ApplicationError(
                        f"{failure.message}{kept}",
                        *failure.details,
                        progress.usage,
                        type=failure.type,
                        next_retry_delay=timedelta(seconds=delay),
                    ) from None
                _call_log(request).warning("retrying through an outage", error=failure.message, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, OUTAGE_RETRY_CAP_S)


async def _heartbeat_sent(changed_at: float | None) -> None:
    """Until the heartbeat of a change made at `changed_at` (monotonic) has surely gone out."""
    if changed_at is not None:
        await asyncio.sleep(max(0.0, changed_at + _HEARTBEAT_SENT_S - time.monotonic()))


def _call_log(request: ClaudeRequest) -> structlog.stdlib.BoundLogger:
    """The log, bound to the call's job, item and attempt."""
    return log.bind(job_id=str(request.job_id), item_id=str(request.item_id), attempt=activity.info().attempt)


def _rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith(_RATE_LIMIT_HEADER_PREFIX)}
