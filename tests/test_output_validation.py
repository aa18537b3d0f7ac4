"""Parsing, validating and scoring the model's reply, and the store step that does it (no stack)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.conversations import ConversationActivities, parse_conversation, quality_scores
from activities.errors import (
    CLAUDE_CONTEXT_WINDOW_EXCEEDED,
    CLAUDE_REFUSAL,
    INVALID_OUTPUT,
    LOW_QUALITY,
    TRUNCATED_OUTPUT,
)
from models.messages import StoreConversationInput, StoredConversation
from tests.fakes import MemoryStorage

GOOD: dict[str, Any] = {
    "title": "David plans his estate",
    "metadata": {"persona": "David Chen", "emotional_arc": "Anxiety -> Confidence",
                 "training_topic": "Essential Estate Planning", "tier": "template"},
    "turns": [
        {"role": "user" if i % 2 == 0 else "assistant",
         "content": f"Turn {i}: David Chen talks through his essential estate planning questions with care and detail."}
        for i in range(8)
    ],
}


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(GOOD),
        "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```\nLet me know if you need more.",
        "Sure! " + json.dumps(GOOD) + " Hope this helps.",
    ],
)
def test_json_is_found_in_a_fenced_block_or_prose(reply: str) -> None:
    assert parse_conversation(reply).title == GOOD["title"]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({**GOOD, "turns": GOOD["turns"][:2]}, "turns: List should have at least 4 items"),
        ({**GOOD, "turns": [GOOD["turns"][0]] * 4}, "turns must alternate"),
        ({**GOOD, "turns": GOOD["turns"][1:]}, "the first turn must be the user's"),
        ({k: v for k, v in GOOD.items() if k != "metadata"}, "metadata: Field required"),
    ],
)
def test_schema_violations_say_what_is_wrong(document: dict, problem: str) -> None:
    with pytest.raises(ValueError, match="does not match the conversation schema") as raised:
        parse_conversation(json.dumps(document))
    assert problem in str(raised.value)


def test_invalid_json_is_named() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_conversation('{"title": "cut off", "turns": [')


def test_quality_scores_reward_a_full_conversation_about_the_persona_and_topic() -> None:
    scores = quality_scores(parse_conversation(json.dumps(GOOD)), "David Chen", "Essential Estate Planning")
    assert scores == {"turns": 1.0, "length": 1.0, "persona": 1.0, "topic": 1.0}


def test_quality_scores_catch_a_short_conversation_about_something_else() -> None:
    off_topic = {**GOOD, "turns": [{"role": r, "content": "ok"} for r in ("user", "assistant") * 2]}
    scores = quality_scores(parse_conversation(json.dumps(off_topic)), "Maria Gonzalez", "College Savings Plans")
    assert scores["turns"] == 0.5 and scores["length"] == 0.0 and scores["persona"] == 0.0 and scores["topic"] == 0.0


# --- the store step, as an activity ---------------------------------------------------------

RAW_KEY = "raw/test-user/c0ffee00-0000-0000-0000-000000000001_raw.json"


def stored_reply(text: str, stop_reason: str = "end_turn") -> MemoryStorage:
    storage = MemoryStorage()
    message = {"content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "usage": {"output_tokens": 4096}}
    storage.objects[RAW_KEY] = {"message": message}
    return storage


async def store(storage: MemoryStorage, quality_min_score: float, persona: str = "David Chen",
                topic: str = "Essential Estate Planning") -> StoredConversation:
    request = StoreConversationInput(
        conversation_id=uuid.UUID(int=1), user_id="test-user", raw_key=RAW_KEY, persona=persona, training_topic=topic
    )
    activities = ConversationActivities(storage, quality_min_score)  # type: ignore[arg-type]
    return await ActivityEnvironment().run(activities.store_conversation, request)


async def test_a_good_reply_is_stored_with_its_quality_scores() -> None:
    storage = stored_reply("Here it is:\n```json\n" + json.dumps(GOOD) + "\n```")

    stored = await store(storage, quality_min_score=0.9)

    assert (stored.quality_score, stored.turn_count, stored.title) == (1.0, 8, GOOD["title"])
    final = storage.objects[stored.final_key]
    assert final["quality"] == {"turns": 1.0, "length": 1.0, "persona": 1.0, "topic": 1.0}
    assert final["turns"] == GOOD["turns"]


async def test_a_reply_under_the_quality_minimum_fails_for_good_with_the_weak_checks() -> None:
    storage = stored_reply(json.dumps(GOOD))

    with pytest.raises(ApplicationError) as raised:
        await store(storage, quality_min_score=0.9, persona="Maria Gonzalez", topic="College Savings Plans")

    failure = raised.value
    assert (failure.type, failure.non_retryable) == (LOW_QUALITY, True)
    assert failure.message == (
        f"quality score 0.50 is under the minimum 0.90 (persona 0.00, topic 0.00); raw response kept at {RAW_KEY}"
    )


async def test_an_invalid_reply_names_the_problem_for_the_repair_and_the_raw_key_for_people() -> None:
    with pytest.raises(ApplicationError) as raised:
        await store(stored_reply('{"title": "cut off", "turns": ['), quality_min_score=0.5)

    failure = raised.value
    assert (failure.type, failure.non_retryable) == (INVALID_OUTPUT, True)
    assert failure.details[0].startswith("the reply is not valid JSON") and RAW_KEY not in failure.details[0]
    assert failure.message == f"{failure.details[0]}; raw response kept at {RAW_KEY}"


async def test_a_refusal_fails_for_good_as_a_refusal_not_as_output_to_repair() -> None:
    storage = stored_reply("", stop_reason="refusal")
    storage.objects[RAW_KEY]["message"]["content"] = []

    with pytest.raises(ApplicationError) as raised:
        await store(storage, quality_min_score=0.5)

    assert (raised.value.type, raised.value.non_retryable) == (CLAUDE_REFUSAL, True)
    assert raised.value.message.startswith("Claude declined to write this conversation (stop_reason refusal)")
    assert "Change the persona, topic or template" in raised.value.message and RAW_KEY in raised.value.message


async def test_a_reply_cut_at_the_context_window_fails_for_good_saying_what_to_shorten() -> None:
    with pytest.raises(ApplicationError) as raised:
        await store(stored_reply(json.dumps(GOOD)[:200], stop_reason="model_context_window_exceeded"), quality_min_score=0.5)

    assert (raised.value.type, raised.value.non_retryable) == (CLAUDE_CONTEXT_WINDOW_EXCEEDED, True)
    assert "Shorten the template" in raised.value.message


async def test_thinking_blocks_are_not_part_of_the_conversation() -> None:
    storage = stored_reply(json.dumps(GOOD))
    thinking = {"type": "thinking", "thinking": "The client is David {not json", "signature": "sig"}
    storage.objects[RAW_KEY]["message"]["content"].insert(0, thinking)

    stored = await store(storage, quality_min_score=0.5)

    assert stored.title == GOOD["title"]


async def test_a_reply_cut_off_at_max_tokens_is_truncated_not_success() -> None:
    with pytest.raises(ApplicationError) as raised:
        await store(stored_reply(json.dumps(GOOD), stop_reason="max_tokens"), quality_min_score=0.5)

    assert (raised.value.type, raised.value.non_retryable) == (TRUNCATED_OUTPUT, True)
    assert raised.value.message.startswith("the reply was cut off at max_tokens (4096 output tokens)")
