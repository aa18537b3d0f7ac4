"""What an online Claude call and a Message Batch request share: the request's messages, the
usage priced, and the raw reply file kept in storage."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from brightrun.logs import get_logger
from brightrun.pricing import PriceTable
from brightrun.settings import Settings
from models.enums import ClaudeProvider
from models.messages import GenerateInput, TokenUsage

if TYPE_CHECKING:
    from anthropic.types import MessageParam  # the SDK is imported where a call is made (activities/claude.py)

log = get_logger(__name__)

EMPTY_REPLY_NOTE = "Your previous reply to this had no text. "
REPAIR_INSTRUCTION = (
    "Your reply could not be used: {problem}. Reply again with only the corrected JSON object, "
    "in exactly the shape the instructions give, and nothing else."
)


@dataclass(frozen=True)
class RequestText:
    system: str
    messages: list[MessageParam]


async def request_text(
    request: GenerateInput, read_stored: Callable[[str, str | None], Awaitable[bytes]]
) -> RequestText:
    """The system prompt and the messages: the prompt's text, read from storage by its key (and
    digest); for a repair, also the rejected reply (read the same way) and what was wrong with it."""
    prompt = request.prompt
    if prompt.text_key is not None:
        stored = json.loads(await read_stored(prompt.text_key, prompt.text_digest))
        system, user = stored["system"], stored["user"]
    else:  # a run recorded before prompts went to storage
        system, user = prompt.system, prompt.user
    messages: list[MessageParam] = [{"role": "user", "content": user}]
    if request.repair:
        rejected = json.loads(await read_stored(request.repair.rejected_raw_key, None))
        rejected_text = "".join(b.get("text", "") for b in rejected["message"]["content"] if b.get("type") == "text")
        instruction = REPAIR_INSTRUCTION.format(problem=request.repair.problem)
        if rejected_text.strip():
            messages += [{"role": "assistant", "content": rejected_text}, {"role": "user", "content": instruction}]
        else:  # the API refuses an empty assistant turn: the problem goes with the prompt instead
            messages = [{"role": "user", "content": f"{user}\n\n{EMPTY_REPLY_NOTE}{instruction}"}]
    return RequestText(system=system, messages=messages)


def priced_usage(prices: PriceTable, settings: Settings, model: str, usage: Any, batch: bool = False) -> TokenUsage:
    """The SDK's usage of an answer, with its cost. The answer names the model that ran (a dated
    snapshot of an alias, say). The call is paid for already, so a model missing from the price
    table costs at the configured model's price (checked when the worker starts) instead of
    failing the item."""
    tokens = TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
    )
    try:
        price = prices.price_of(model)
    except KeyError:
        log.warning("no price for the model that answered; using the configured model's", model=model)
        price = prices.price_of(settings.claude_model)
    breakdown = getattr(usage, "cache_creation", None)
    one_hour = breakdown.ephemeral_1h_input_tokens if breakdown is not None else None
    return tokens.model_copy(update={"cost_usd": price.cost_usd(tokens, batch=batch, one_hour_cache_writes=one_hour)})


def raw_response_document(
    settings: Settings,
    request: GenerateInput,
    message: dict[str, Any],
    request_id: str | None,
    generated_by: ClaudeProvider | None,
    **delivery: Any,
) -> dict[str, Any]:
    """The raw reply file: the model's whole answer and where it came from (`generated_by`: who
    answered; None for a request not answered yet). `delivery` adds how it came (rate-limit
    headers online; the Message Batch and custom_id in batch mode)."""
    return {
        "request_id": request_id,
        "generated_by": generated_by.value if generated_by else None,
        "template_id": str(request.prompt.template_id),
        "template_version": request.prompt.template_version,
        "max_tokens": settings.claude_max_tokens(request.tier),
        "repair_of": request.repair.rejected_raw_key if request.repair else None,
        **delivery,
        "message": message,
    }
