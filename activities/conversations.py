"""Parse and validate the model's answer, and store the final conversation beside the raw one."""

from __future__ import annotations

import json
import re

from pydantic import ValidationError
from temporalio import activity

from activities.errors import INVALID_OUTPUT, TRUNCATED_OUTPUT, permanent
from brightrun.storage import Storage, final_conversation_key
from models.conversation import ConversationDocument
from models.messages import StoreConversationInput, StoredConversation

_FENCED_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


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


class ConversationActivities:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    @activity.defn(name="store_conversation")
    async def store_conversation(self, request: StoreConversationInput) -> StoredConversation:
        raw = json.loads(await self._storage.get_bytes(self._storage.conversation_bucket, request.raw_key))
        message = raw["message"]
        if message.get("stop_reason") == "max_tokens":
            raise permanent(
                f"the reply was cut off at max_tokens ({message['usage']['output_tokens']} output tokens); "
                f"raw response kept at {request.raw_key}",
                TRUNCATED_OUTPUT,
            )
        text = "".join(block.get("text", "") for block in message["content"] if block.get("type") == "text")
        try:
            document = parse_conversation(text)
        except ValueError as exc:
            raise permanent(f"{exc}; raw response kept at {request.raw_key}", INVALID_OUTPUT) from None
        final_key = final_conversation_key(request.user_id, request.conversation_id)
        await self._storage.put_json(
            self._storage.conversation_bucket,
            final_key,
            {"conversation_id": str(request.conversation_id), **document.model_dump(mode="json")},
        )
        return StoredConversation(final_key=final_key, title=document.title, turn_count=len(document.turns))
