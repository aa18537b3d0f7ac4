"""The Anthropic client, built once per worker, and the plan item workflows schedule their calls
by. Temporal owns retries, so the SDK makes none."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from brightrun.settings import Settings
from models.enums import ClaudeProvider, Tier
from models.messages import ClaudeCallPlan, MessageBatchPlan

if TYPE_CHECKING:
    # The SDK takes over a second to import: only a process that calls Claude imports it, not one
    # that only needs the call plans (the command line launching a job).
    import httpx2
    from anthropic import AsyncAnthropic

# The header the offline stand-in (devtools/standin.py) puts on every response it sends.
STANDIN_HEADER = "x-brightrun-standin"


def create_claude_client(settings: Settings) -> AsyncAnthropic:
    from anthropic import AsyncAnthropic

    return AsyncAnthropic(
        api_key=settings.anthropic_key_value(),
        base_url=settings.anthropic_base_url,
        max_retries=0,  # each call sets its own timeout, sized from its max_tokens
    )


class Responder(NamedTuple):
    """Who answered a call, and the host its request went to."""

    provider: ClaudeProvider
    host: str


def answered_by(response: httpx2.Response) -> Responder:
    """Who answered, from the response itself: the offline stand-in marks every response it sends
    with STANDIN_HEADER, so a worker with a (dummy) API key and ANTHROPIC_BASE_URL at the
    stand-in still records the stand-in. A response without the mark is Anthropic's API's."""
    provider = ClaudeProvider.OFFLINE_STANDIN if response.headers.get(STANDIN_HEADER) else ClaudeProvider.ANTHROPIC
    return Responder(provider, response.request.url.host)


def claude_call_plan(settings: Settings) -> ClaudeCallPlan:
    """The settings' Claude queue, attempt timeouts per tier, heartbeat timeout, attempt cap and
    backoff, for the workflows (which read no environment)."""
    return ClaudeCallPlan(
        task_queue=settings.claude_task_queue,
        attempt_timeout_s={tier: settings.claude_attempt_timeout_s(tier) for tier in Tier},
        judge_attempt_timeout_s=settings.judge_attempt_timeout_s(),
        heartbeat_timeout_s=settings.claude_heartbeat_timeout_s,
        max_attempts=settings.claude_max_attempts,
        retry_base_s=settings.claude_retry_base_s,
        retry_cap_s=settings.claude_retry_cap_s,
    )


def message_batch_plan(settings: Settings) -> MessageBatchPlan:
    """The settings' Message Batches sizes and polling, for the workflows."""
    return MessageBatchPlan(
        max_requests=settings.message_batch_max_requests,
        max_bytes=settings.message_batch_max_bytes,
        gather_s=settings.message_batch_gather_s,
        poll_initial_s=settings.message_batch_poll_initial_s,
        poll_max_s=settings.message_batch_poll_max_s,
        in_flight_items=settings.message_batch_in_flight_items,
    )
