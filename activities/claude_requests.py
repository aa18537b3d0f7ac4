"""What an online Claude call and a Message Batch request share: the request's messages, the
usage priced, and the raw reply file kept in storage."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from brightrun.logs import get_logger
from brightrun.model_traits import Thinking, traits_of
from brightrun.pricing import PriceTable
from brightrun.settings import Settings
from brightrun.storage import judge_raw_key, raw_response_key
from models.enums import ClaudeProvider
from models.messages import GenerateInput, JudgeInput, TokenUsage

if TYPE_CHECKING:
    from anthropic.types import MessageParam  # the SDK is imported where a call is made (activities/claude.py)

# A Claude call of an item: the generation of its conversation, or the judging of it. Both go
# through the same call (activities/claude.py) and the same Message Batches.
ClaudeRequest = GenerateInput | JudgeInput

log = get_logger(__name__)

EMPTY_REPLY_NOTE = "Your previous reply to this had no text. "
REPAIR_INSTRUCTION = (
    "Your reply could not be used: {problem}. Reply again with only the corrected JSON object, "
    "in exactly the shape the instructions give, and nothing else."
)


TOOL_REPAIR_INSTRUCTION = "This could not be used: {problem}. Call the tool again with the corrected input."


@dataclass(frozen=True)
class CallShape:
    """What differs between a generation call and a judge call, beside their text."""

    model: str
    max_tokens: int
    timeout_s: float  # the SDK's, for the whole answer
    raw_key: str  # where the raw reply is stored: fixed by ids, so a retried attempt writes the same file
    # The model thinks by default: the API refuses a forced tool choice beside thinking, so its
    # tool is offered (tool_choice auto) and the instructions ask for the call.
    thinks: bool = False


def call_shape(settings: Settings, request: ClaudeRequest) -> CallShape:
    if isinstance(request, JudgeInput):
        return CallShape(
            model=settings.judge_model,
            max_tokens=settings.judge_call_max_tokens(),
            timeout_s=settings.judge_timeout_s(),
            raw_key=judge_raw_key(
                request.user_id, request.conversation_id, request.rubric_name, request.rubric_version,
                repair=request.repair is not None,
            ),
            thinks=traits_of(settings.judge_model).thinking != Thinking.NONE,
        )
    return CallShape(
        model=settings.claude_model,
        max_tokens=settings.claude_max_tokens(request.tier),
        timeout_s=settings.claude_timeout_s(request.tier),
        raw_key=raw_response_key(request.user_id, request.conversation_id, repair=request.repair is not None),
    )


@dataclass(frozen=True)
class RequestText:
    system: str
    messages: list[MessageParam]
    # A judge call's verdict tool, and the tool_choice that forces it; none for a generation.
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None

    def params(self, shape: CallShape, cache_control: dict[str, str] | None = None) -> dict[str, Any]:
        """The Messages API parameters of the text: the system text is the cached prefix (a
        template's instructions, a rubric) every call of a job shares (5-minute cache unless
        `cache_control` says otherwise)."""
        params: dict[str, Any] = {
            "system": [{"type": "text", "text": self.system, "cache_control": cache_control or {"type": "ephemeral"}}],
            "messages": self.messages,
        }
        if self.tools:
            params["tools"] = self.tools
            params["tool_choice"] = {"type": "auto"} if shape.thinks else self.tool_choice
        return params


async def request_text(
    request: ClaudeRequest, read_stored: Callable[[str, str | None], Awaitable[bytes]]
) -> RequestText:
    """The system prompt and the messages: the prompt's text, read from storage by its key (and
    digest); for a repair, also the rejected reply (read the same way) and what was wrong with it."""
    tools = tool_choice = None
    if isinstance(request, JudgeInput):
        stored = json.loads(await read_stored(request.text_key, request.text_digest))
        system, user, tools, tool_choice = stored["system"], stored["user"], stored["tools"], stored["tool_choice"]
    elif request.prompt.text_key is not None:
        stored = json.loads(await read_stored(request.prompt.text_key, request.prompt.text_digest))
        system, user = stored["system"], stored["user"]
    else:  # a run recorded before prompts went to storage
        system, user = request.prompt.system, request.prompt.user
    messages: list[MessageParam] = [{"role": "user", "content": user}]
    if request.repair:
        rejected = json.loads(await read_stored(request.repair.rejected_raw_key, None))
        messages = _repair_messages(user, rejected["message"]["content"], request.repair.problem)
    return RequestText(system=system, messages=messages, tools=tools, tool_choice=tool_choice)


def _repair_messages(user: str, rejected: list[dict[str, Any]], problem: str) -> list[MessageParam]:
    """The prompt, the rejected reply and what was wrong with it. A rejected tool call is
    answered by its tool result, marked as an error (the tool is forced, so it is called again)."""
    tool_calls = [b for b in rejected if b.get("type") == "tool_use"]
    if tool_calls:
        # A thinking model's thinking goes back with its tool call, as the API requires.
        thoughts = [b for b in rejected if b.get("type") in ("thinking", "redacted_thinking")]
        calls: list[Any] = [
            *thoughts,
            *({"type": "tool_use", "id": b["id"], "name": b["name"], "input": b.get("input")} for b in tool_calls),
        ]
        note = TOOL_REPAIR_INSTRUCTION.format(problem=problem)
        results: list[Any] = [{"type": "tool_result", "tool_use_id": b["id"], "is_error": True, "content": note} for b in tool_calls]
        return [
            {"role": "user", "content": user},
            {"role": "assistant", "content": calls},
            {"role": "user", "content": results},
        ]
    rejected_text = "".join(b.get("text", "") for b in rejected if b.get("type") == "text")
    instruction = REPAIR_INSTRUCTION.format(problem=problem)
    if rejected_text.strip():
        return [
            {"role": "user", "content": user},
            {"role": "assistant", "content": rejected_text},
            {"role": "user", "content": instruction},
        ]
    # The API refuses an empty assistant turn: the problem goes with the prompt instead.
    return [{"role": "user", "content": f"{user}\n\n{EMPTY_REPLY_NOTE}{instruction}"}]


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
    request: ClaudeRequest,
    message: dict[str, Any],
    request_id: str | None,
    generated_by: ClaudeProvider | None,
    **delivery: Any,
) -> dict[str, Any]:
    """The raw reply file: the model's whole answer and where it came from (`generated_by`: who
    answered; None for a request not answered yet). `delivery` adds how it came (rate-limit
    headers online; the Message Batch and custom_id in batch mode)."""
    if isinstance(request, JudgeInput):
        asked = {"rubric": request.rubric_name, "rubric_version": request.rubric_version}
    else:
        asked = {"template_id": str(request.prompt.template_id), "template_version": request.prompt.template_version}
    return {
        "request_id": request_id,
        "generated_by": generated_by.value if generated_by else None,
        **asked,
        "max_tokens": call_shape(settings, request).max_tokens,
        "repair_of": request.repair.rejected_raw_key if request.repair else None,
        **delivery,
        "message": message,
    }
