"""The Claude call. One layer owns retries (Temporal): the SDK makes none, every attempt is a
fresh request, and the raw response is in storage before the activity returns its reference."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anthropic
from anthropic import AsyncAnthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from brightrun.logging import get_logger
from brightrun.pricing import PriceTable
from brightrun.settings import Settings
from brightrun.storage import Storage, raw_conversation_key
from models.messages import GeneratedRaw, GenerateInput, TokenUsage

log = get_logger(__name__)

# HTTP statuses a later attempt can get past; every other 4xx is a request that will never work.
_TRANSIENT_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
_RATE_LIMIT_HEADER_PREFIX = "anthropic-ratelimit-"
HEARTBEAT_EVERY_S = 5.0
REPAIR_INSTRUCTION = (
    "Your reply could not be used: {problem}. Reply again with only the corrected JSON object, "
    "in exactly the shape the instructions give, and nothing else."
)


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> timedelta:
    """Exponential backoff with jitter, so a burst of failures does not retry in lockstep."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    return "spend" in str(exc.body).lower() or "spend" in exc.message.lower()


def classify_failure(exc: Exception, attempt: int, settings: Settings) -> ApplicationError:
    """Turn an SDK error into the failure Temporal should act on: retry when, or never."""
    if isinstance(exc, anthropic.APIStatusError):
        error_type = f"claude_{exc.status_code}"
        message = f"Claude API {exc.status_code}: {exc.message}"
        if exc.status_code not in _TRANSIENT_STATUSES or (exc.status_code == 429 and _is_spend_limit(exc)):
            return ApplicationError(message, type=error_type, non_retryable=True)
        delay = backoff_delay(attempt, settings.claude_retry_base_s, settings.claude_retry_cap_s)
        retry_after = _retry_after(exc)
        if retry_after is not None:
            delay = max(delay, timedelta(seconds=retry_after))
    elif isinstance(exc, anthropic.APIConnectionError):  # includes timeouts
        error_type = "claude_connection"
        message = f"Claude API unreachable: {exc.__class__.__name__}: {exc}"
        delay = backoff_delay(attempt, settings.claude_retry_base_s, settings.claude_retry_cap_s)
    else:
        raise exc
    if attempt >= settings.claude_max_attempts:
        return ApplicationError(
            f"gave up after {attempt} attempts; last error: {message}", type=error_type, non_retryable=True
        )
    return ApplicationError(message, type=error_type, next_retry_delay=delay)


class RateLimitGate:
    """Reads the anthropic-ratelimit-* headers of each answer; when the remaining request or
    token budget falls under the low watermark, the next call waits for that budget's reset."""

    def __init__(self, low_watermark: float) -> None:
        self._low_watermark = low_watermark
        self._resume_at = 0.0

    def observe(self, headers: dict[str, str]) -> None:
        for budget in ("requests", "tokens", "input-tokens", "output-tokens"):
            limit = headers.get(f"{_RATE_LIMIT_HEADER_PREFIX}{budget}-limit")
            remaining = headers.get(f"{_RATE_LIMIT_HEADER_PREFIX}{budget}-remaining")
            reset = headers.get(f"{_RATE_LIMIT_HEADER_PREFIX}{budget}-reset")
            if not (limit and remaining and reset) or int(limit) <= 0:
                continue
            if int(remaining) / int(limit) < self._low_watermark:
                reset_at = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
                self._resume_at = max(self._resume_at, reset_at)

    async def wait(self) -> None:
        pause = self._resume_at - datetime.now(UTC).timestamp()
        if pause > 0:
            log.info("rate limit budget low: waiting for its reset", wait_s=round(pause, 1))
            await asyncio.sleep(pause)


@asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the call runs, also when no byte arrives: a lost worker is noticed within
    the heartbeat timeout, and a cancellation reaches the call promptly."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class ClaudeActivities:
    def __init__(self, client: AsyncAnthropic, storage: Storage, settings: Settings, prices: PriceTable) -> None:
        self._client = client
        self._storage = storage
        self._settings = settings
        self._prices = prices
        self._gate = RateLimitGate(settings.claude_rate_limit_low_watermark)

    async def _messages(self, request: GenerateInput) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": request.prompt.user}]
        if request.repair:
            rejected = json.loads(
                await self._storage.get_bytes(self._storage.conversation_bucket, request.repair.rejected_raw_key)
            )
            rejected_text = "".join(b.get("text", "") for b in rejected["message"]["content"] if b.get("type") == "text")
            messages += [
                {"role": "assistant", "content": rejected_text},
                {"role": "user", "content": REPAIR_INSTRUCTION.format(problem=request.repair.problem)},
            ]
        return messages

    @activity.defn(name="generate_conversation")
    async def generate_conversation(self, request: GenerateInput) -> GeneratedRaw:
        attempt = activity.info().attempt
        messages = await self._messages(request)
        async with heartbeating():
            await self._gate.wait()
            started = time.monotonic()
            try:
                async with self._client.messages.stream(
                    model=self._settings.claude_model,
                    max_tokens=self._settings.claude_max_tokens(request.tier),
                    # The static instructions are the cacheable prefix every item of a batch shares.
                    system=[{"type": "text", "text": request.prompt.system, "cache_control": {"type": "ephemeral"}}],
                    messages=messages,
                    extra_headers={"x-brightrun-item": str(request.item_id)},
                    timeout=self._settings.claude_timeout_s(request.tier),
                ) as stream:
                    async for _event in stream:
                        pass
                    message = await stream.get_final_message()
                    headers = dict(stream.response.headers)
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                if isinstance(exc, anthropic.APIStatusError):
                    self._gate.observe(dict(exc.response.headers))
                failure = classify_failure(exc, attempt, self._settings)
                log.warning(
                    "claude call failed",
                    job_id=str(request.job_id),
                    item_id=str(request.item_id),
                    error=failure.message,
                    error_type=failure.type,
                    retry=not failure.non_retryable,
                    retry_in_s=failure.next_retry_delay.total_seconds() if failure.next_retry_delay else None,
                )
                raise failure from None
        latency_ms = int((time.monotonic() - started) * 1000)
        self._gate.observe(headers)
        rate_limit = {k: v for k, v in headers.items() if k.startswith(_RATE_LIMIT_HEADER_PREFIX)}
        usage = self._usage(message)
        raw_key = raw_conversation_key(request.user_id, request.conversation_id, repair=request.repair is not None)
        await self._storage.put_json(
            self._storage.conversation_bucket,
            raw_key,
            {
                "request_id": headers.get("request-id"),
                "generated_by": "offline-standin" if self._settings.uses_standin else "anthropic",
                "template_id": str(request.prompt.template_id),
                "template_version": request.prompt.template_version,
                "repair_of": request.repair.rejected_raw_key if request.repair else None,
                "rate_limit": rate_limit,
                "message": message.model_dump(mode="json"),
            },
        )
        log.info(
            "claude call succeeded",
            job_id=str(request.job_id),
            item_id=str(request.item_id),
            latency_ms=latency_ms,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cost_usd=round(usage.cost_usd, 6),
            stop_reason=message.stop_reason,
            rate_limit=rate_limit,
        )
        return GeneratedRaw(
            raw_key=raw_key,
            model=message.model,
            stop_reason=message.stop_reason,
            usage=usage,
            latency_ms=latency_ms,
            attempt=attempt,
            rate_limit=rate_limit,
        )

    def _usage(self, message: anthropic.types.Message) -> TokenUsage:
        tokens = {
            "input_tokens": message.usage.input_tokens,
            "output_tokens": message.usage.output_tokens,
            "cache_creation_input_tokens": message.usage.cache_creation_input_tokens or 0,
            "cache_read_input_tokens": message.usage.cache_read_input_tokens or 0,
        }
        cost = self._prices.cost_usd(
            message.model,
            tokens["input_tokens"],
            tokens["output_tokens"],
            tokens["cache_creation_input_tokens"],
            tokens["cache_read_input_tokens"],
        )
        return TokenUsage(**tokens, cost_usd=cost)
