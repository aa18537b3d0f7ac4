"""Parse, validate and score the model's answer, and store the final conversation beside the raw one."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.data_errors import classify_data_errors
from activities.errors import (
    CLAUDE_CONTEXT_WINDOW_EXCEEDED,
    CLAUDE_REFUSAL,
    INVALID_OUTPUT,
    LOW_QUALITY,
    TRUNCATED_OUTPUT,
    permanent,
)
from brightrun.storage import Storage, final_conversation_key
from models.conversation import ConversationDocument
from models.messages import StoreConversationInput, StoredConversation

_FENCED_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
GOOD_TURN_COUNT = 8
GOOD_WORDS_PER_TURN = (8, 150)


def reply_text(message: dict[str, Any]) -> str:
    """The text of a reply: its text blocks only (thinking blocks are the model's reasoning, not
    the answer)."""
    return "".join(block.get("text", "") for block in message["content"] if block.get("type") == "text")


def stop_problem(message: dict[str, Any], raw_key: str) -> ApplicationError | None:
    """The failure of a reply that ended for a reason other than finishing it, or None."""
    stop_reason = message.get("stop_reason")
    if stop_reason == "refusal":
        return permanent(
            "Claude declined to write this conversation (stop_reason refusal). Change the persona, topic or "
            f"template text that asks for it, then retry the item; raw response kept at {raw_key}",
            CLAUDE_REFUSAL,
        )
    if stop_reason == "model_context_window_exceeded":
        return permanent(
            "the prompt and the reply outgrew the model's context window (stop_reason "
            "model_context_window_exceeded). Shorten the template or the catalog descriptions, or use a model "
            f"with a larger context window; raw response kept at {raw_key}",
            CLAUDE_CONTEXT_WINDOW_EXCEEDED,
        )
    if stop_reason == "max_tokens":
        return permanent(
            f"the reply was cut off at max_tokens ({message['usage']['output_tokens']} output tokens); "
            f"raw response kept at {raw_key}",
            TRUNCATED_OUTPUT,
        )
    return None


def extract_json_text(text: str) -> str:
    """The JSON object in a reply, tolerating a fenced block or prose around it."""
    fenced = _FENCED_BLOCK.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start != -1 and end > start else text


def parse_conversation(text: str) -> ConversationDocument:
    """Raises ValueError with a message that says what is wrong with the reply."""
    try:
        data = json.loads(extract_json_text(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON: {exc}") from None
    try:
        return ConversationDocument.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"the reply does not match the conversation schema: {problems}") from None


def quality_scores(document: ConversationDocument, persona: str, topic: str) -> dict[str, float]:
    """Each check scores 0..1: enough turns, turns of a natural length, the persona and the
    topic actually present in what is said."""
    spoken = " ".join(turn.content for turn in document.turns).lower()
    words_per_turn = len(spoken.split()) / len(document.turns)
    low, high = GOOD_WORDS_PER_TURN
    topic_words = [w for w in re.findall(r"[a-z0-9]+", topic.lower()) if len(w) > 3]
    return {
        "turns": min(1.0, len(document.turns) / GOOD_TURN_COUNT),
        "length": 1.0 if low <= words_per_turn <= high else 0.0,
        "persona": 1.0 if persona.split()[0].lower() in spoken else 0.0,
        "topic": sum(w in spoken for w in topic_words) / len(topic_words) if topic_words else 1.0,
    }


class ConversationActivities:
    def __init__(self, storage: Storage, quality_min_score: float) -> None:
        self._storage = storage
        self._quality_min_score = quality_min_score

    @activity.defn(name="store_conversation")
    @classify_data_errors
    async def store_conversation(self, request: StoreConversationInput) -> StoredConversation:
        raw = json.loads(
            await self._storage.get_bytes(self._storage.conversation_bucket, request.raw_key, request.raw_digest)
        )
        message = raw["message"]
        stopped = stop_problem(message, request.raw_key)
        if stopped is not None:
            raise stopped
        text = reply_text(message)
        try:
            document = parse_conversation(text)
        except ValueError as exc:
            # The details carry the problem alone: the repair request quotes it to the model.
            raise permanent(f"{exc}; raw response kept at {request.raw_key}", INVALID_OUTPUT, str(exc)) from None
        scores = quality_scores(document, request.persona, request.training_topic)
        score = round(sum(scores.values()) / len(scores), 3)
        if score < self._quality_min_score:
            weak = ", ".join(f"{name} {value:.2f}" for name, value in scores.items() if value < 1)
            raise permanent(
                f"quality score {score:.2f} is under the minimum {self._quality_min_score:.2f} ({weak}); "
                f"raw response kept at {request.raw_key}",
                LOW_QUALITY,
            )
        final_key = final_conversation_key(request.user_id, request.conversation_id)
        await self._storage.put_json(
            self._storage.conversation_bucket,
            final_key,
            {"conversation_id": str(request.conversation_id), "quality": scores, **document.model_dump(mode="json")},
        )
        return StoredConversation(
            final_key=final_key, title=document.title, turn_count=len(document.turns), quality_score=score
        )
