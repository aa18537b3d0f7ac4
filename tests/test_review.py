"""Review on the real stack: transitions and who/when/why, bulk forms that touch only pending
conversations, one command rejecting near-duplicates and low quality, ownership refusals, and
the CLI's JSON and exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Awaitable

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.storage import Storage
from models.enums import ReviewStatus
from models.tables import Conversation
from service.access import NotFoundError
from service.batches import BatchInputError
from service.review import Owner, Selection, list_conversations, review, show_conversation
from tests.conversations import dialogue, new_conversation, new_job
from tests.test_starter import starter

APPROVED, REJECTED, PENDING = ReviewStatus.APPROVED, ReviewStatus.REJECTED, ReviewStatus.PENDING_REVIEW


def a_user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def row(sessions: async_sessionmaker, conversation_id: uuid.UUID) -> Conversation:
    async with sessions() as session:
        return await session.scalar(select(Conversation).where(Conversation.conversation_id == conversation_id))


async def test_approve_and_reject_record_who_when_and_why(sessions: async_sessionmaker, storage: Storage) -> None:
    user = a_user("rita")
    conversation = await new_conversation(sessions, storage, await new_job(sessions, user), user, dialogue("a"))
    owner = Owner.of(user)

    with pytest.raises(BatchInputError, match="a rejection needs --reason"):
        await review(sessions, owner, REJECTED, Selection((str(conversation),)))
    approved = await review(sessions, owner, APPROVED, Selection((str(conversation),)))
    first = await row(sessions, conversation)
    again = await review(sessions, owner, APPROVED, Selection((str(conversation),)))
    rejected = await review(sessions, owner, REJECTED, Selection((str(conversation),)), reason="off-topic advice")
    second = await row(sessions, conversation)

    assert (approved.changed, again.changed, again.unchanged, rejected.changed) == (1, 0, 1, 1)
    assert (first.review_status, first.reviewed_by, first.review_reason) == (APPROVED, user, None)
    assert (second.review_status, second.reviewed_by, second.review_reason) == (REJECTED, user, "off-topic advice")
    assert first.reviewed_at is not None and second.reviewed_at is not None
    assert second.reviewed_at >= first.reviewed_at


async def test_bulk_forms_take_only_pending_conversations_in_scope(sessions: async_sessionmaker, storage: Storage) -> None:
    user = a_user("sam")
    job, other_job = await new_job(sessions, user), await new_job(sessions, user)
    good = await new_conversation(sessions, storage, job, user, dialogue("g"), quality_score=0.95)
    weak = await new_conversation(sessions, storage, job, user, dialogue("w"), quality_score=0.55)
    decided = await new_conversation(sessions, storage, job, user, dialogue("d"), quality_score=0.99,
                                     review_status=REJECTED.value, review_reason="a person said no")
    elsewhere = await new_conversation(sessions, storage, other_job, user, dialogue("e"), quality_score=0.97)
    owner = Owner.of(user)

    result = await review(sessions, owner, APPROVED, Selection(job=str(job), min_quality=0.8))

    assert result.conversation_ids == [good]
    assert [(await row(sessions, c)).review_status for c in (good, weak, decided, elsewhere)] == [
        APPROVED, PENDING, REJECTED, PENDING
    ]
    everything = await review(sessions, owner, APPROVED, Selection(all_pending=True))
    assert sorted(everything.conversation_ids) == sorted([weak, elsewhere])
    assert (await row(sessions, decided)).review_status == REJECTED, "a bulk rule never overturns a person"


async def test_one_command_rejects_near_duplicates_and_low_quality_with_their_reasons(
    sessions: async_sessionmaker, storage: Storage
) -> None:
    user = a_user("tess")
    job = await new_job(sessions, user)
    original = await new_conversation(sessions, storage, job, user, dialogue("o"), quality_score=0.9)
    copy = await new_conversation(sessions, storage, job, user, dialogue("o"), quality_score=0.9,
                                  near_duplicate=True, near_duplicate_of=original)
    weak = await new_conversation(sessions, storage, job, user, dialogue("w"), quality_score=0.4)
    fine = await new_conversation(sessions, storage, job, user, dialogue("f"), quality_score=0.8)

    result = await review(sessions, Owner.of(user), REJECTED, Selection(job=str(job), near_duplicates=True, below_quality=0.6))

    assert sorted(result.conversation_ids) == sorted([copy, weak])
    assert (await row(sessions, copy)).review_reason == f"near-duplicate of conversation {original}"
    assert (await row(sessions, weak)).review_reason == "quality under 0.6"
    assert {(await row(sessions, c)).review_status for c in (original, fine)} == {PENDING}


async def test_a_user_acts_on_their_own_conversations_unless_admin(sessions: async_sessionmaker, storage: Storage) -> None:
    owner_name, intruder_name = a_user("uma"), a_user("vic")
    job = await new_job(sessions, owner_name)
    theirs = await new_conversation(sessions, storage, job, owner_name, dialogue("t"))
    intruder = Owner.of(intruder_name)

    # Another user's conversation or job is "not found": a guessed id tells nothing about what exists.
    with pytest.raises(NotFoundError, match=f"conversation {theirs} not found"):
        await review(sessions, intruder, APPROVED, Selection((str(theirs),)))
    with pytest.raises(NotFoundError, match=f"job {job} not found"):
        await review(sessions, intruder, APPROVED, Selection(job=str(job)))
    with pytest.raises(NotFoundError, match=f"conversation {theirs} not found"):
        await show_conversation(sessions, storage, intruder, str(theirs))
    assert await review(sessions, intruder, APPROVED, Selection(all_pending=True)) is not None
    assert (await row(sessions, theirs)).review_status == PENDING, "--all-pending stays within the user's own"
    assert await list_conversations(sessions, intruder, Selection()) == []

    admin = await review(sessions, Owner.of(intruder_name, admin=True), APPROVED, Selection((str(theirs),)))
    assert admin.changed == 1 and (await row(sessions, theirs)).reviewed_by == intruder_name
    with pytest.raises(BatchInputError, match="must be letters, digits"):
        Owner.of("../etc")


async def test_the_cli_lists_shows_approves_and_refuses_in_one_line(
    cli_env: dict[str, str], sessions: async_sessionmaker, storage: Storage
) -> None:
    user = a_user("walt")
    job = await new_job(sessions, user)
    conversation = await new_conversation(sessions, storage, job, user, dialogue("cli"), quality_score=0.9)
    async with sessions.begin() as session:
        await session.execute(update(Conversation).where(Conversation.conversation_id == conversation).values(
            failed_checks=[{"check": "quality.persona", "reason": "the persona's first name never appears"}]
        ))

    def run(*args: str) -> Awaitable[subprocess.CompletedProcess]:
        return asyncio.to_thread(starter, cli_env, "review", *args)

    listed = await run("list", "--job", str(job), "--user", user, "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert {k: entry[k] for k in ("conversation_id", "job_id", "review_status", "quality_score", "enriched")} == {
        "conversation_id": str(conversation), "job_id": str(job), "review_status": "pending_review",
        "quality_score": 0.9, "enriched": False,
    }
    assert entry["failed_checks"] == ["quality.persona"] and entry["final_key"].endswith(f"{conversation}.json")

    shown = await run("show", str(conversation), "--user", user)
    assert shown.returncode == 0, shown.stderr
    assert "USER: cli turn 0" in shown.stdout and "the persona's first name never appears" in shown.stdout
    fields = " ".join(shown.stdout.split())  # label and value, however the columns are spaced
    assert "provider anthropic" in fields and "provider host api.anthropic.com" in fields

    approved = await run("approve", "--job", str(job), "--min-quality", "0.8", "--user", user, "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["conversation_ids"] == [str(conversation)]
    after = json.loads((await run("list", "--status", "approved", "--user", user, "--json")).stdout)
    assert [e["conversation_id"] for e in after] == [str(conversation)]

    for args, message in [
        (("approve", str(conversation), "--user", a_user("xena")), f"conversation {conversation} not found"),
        (("reject", str(conversation), "--user", user), "a rejection needs --reason"),
        (("approve", "not-a-uuid", "--user", user), "conversation id 'not-a-uuid' is not a valid UUID"),
        (("approve", "--user", user), "name conversations, or select them in bulk"),
        (("list", "--min-quality", "2", "--user", user), "--min-quality must be between 0 and 1"),
        (("show", str(uuid.uuid4()), "--user", user), "not found"),
        (("list", "--user", "a/b"), "must be letters, digits"),
    ]:
        refused = await run(*args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
