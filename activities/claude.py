"""The Claude call. One layer owns retries (Temporal): the SDK makes none, every attempt is a
fresh request, and the raw response is in storage before the activity returns its reference."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import anthropic
from anthropic import AsyncAnthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from brightrun.logging import get_logger
from brightrun.settings import Settings
from brightrun.storage import Storage, raw_conversation_key
from models.messages import GeneratedRaw, GenerateInput, TokenUsage

log = get_logger(__name__)

# HTTP statuses a later attempt can get past; everything else 4xx is a request that will never work.
_TRANSIENT_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
_RATE_LIMIT_HEADER_PREFIX = "anthropic-ratelimit-"


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> timedelta:
    """Exponential backoff with full jitter, so a burst of failures does not retry in lockstep."""
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


class ClaudeActivities:
    def __init__(self, client: AsyncAnthropic, storage: Storage, settings: Settings) -> None:
        self._client = client
        self._storage = storage
        self._settings = settings

    @activity.defn(name="generate_conversation")
    async def generate_conversation(self, request: GenerateInput) -> GeneratedRaw:
        attempt = activity.info().attempt
        started = time.monotonic()
        try:
            async with self._client.messages.stream(
                model=self._settings.claude_model,
                max_tokens=self._settings.claude_max_tokens,
                # The static instructions are the cacheable prefix every item of a batch shares.
                system=[{"type": "text", "text": request.prompt.system, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": request.prompt.user}],
                extra_headers={"x-brightrun-item": str(request.item_id)},
            ) as stream:
                async for _event in stream:
                    activity.heartbeat()
                message = await stream.get_final_message()
                headers = stream.response.headers
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            failure = classify_failure(exc, attempt, self._settings)
            log.warning("claude call failed", item_id=str(request.item_id), error=str(failure), retry=not failure.non_retryable)
            raise failure from None
        latency_ms = int((time.monotonic() - started) * 1000)
        rate_limit = {k: v for k, v in headers.items() if k.startswith(_RATE_LIMIT_HEADER_PREFIX)}
        usage = TokenUsage(
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            cache_creation_input_tokens=message.usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=message.usage.cache_read_input_tokens or 0,
        )
        raw_key = raw_conversation_key(request.user_id, request.conversation_id)
        await self._storage.put_json(
            self._storage.conversation_bucket,
            raw_key,
            {
                "request_id": headers.get("request-id"),
                "generated_by": "offline-standin" if self._settings.uses_standin else "anthropic",
                "template_id": str(request.prompt.template_id),
                "template_version": request.prompt.template_version,
                "rate_limit": rate_limit,
                "message": message.model_dump(mode="json"),
            },
        )
        log.info(
            "claude call succeeded",
            item_id=str(request.item_id),
            latency_ms=latency_ms,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
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
        )
