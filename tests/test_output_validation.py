"""Parsing, validating and scoring the model's reply (pure functions, no stack)."""

from __future__ import annotations

import json

import pytest

from activities.conversations import parse_conversation, quality_scores

GOOD = {
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
