"""Verdicts in review and export, on the real stack: conversations with known verdicts, listed,
sorted and filtered by the judge's scores, approved and rejected in bulk by them, and exported
with their verdicts in the records' metadata and the dataset card."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.export import ExportActivities
from brightrun.settings import Settings
from brightrun.storage import Storage
from models.enums import ReviewStatus
from models.tables import Conversation, ConversationVerdict
from service.batches import BatchInputError
from service.export import ExportRequest, export
from service.judge import JudgeFilter, calibrate, parse_criterion_bounds
from service.review import Owner, Position, Selection, list_conversations, review, show_conversation
from tests.conversations import dialogue, new_conversation, new_job
from tests.test_starter import starter
from workflows.export import ExportWorkflow

RUBRIC = "advisor-conversations"
CRITERIA = ["persona_fidelity", "emotional_arc", "topic_accuracy", "naturalness", "training_usefulness"]


async def judged(
    sessions: async_sessionmaker, storage: Storage, job: uuid.UUID, user: str, overall: float, topic_accuracy: int,
    review_status: ReviewStatus = ReviewStatus.PENDING_REVIEW, reasons: dict[str, str] | None = None,
) -> uuid.UUID:
    """A conversation with a known verdict on its row and in its history; each criterion's reason
    is "{criterion} as given." unless `reasons` gives it."""
    reasons = reasons or {}
    scores = {key: {"score": round(overall), "reason": reasons.get(key, f"{key} as given.")} for key in CRITERIA}
    scores["topic_accuracy"]["score"] = topic_accuracy
    conversation_id = await new_conversation(
        sessions, storage, job, user, dialogue(uuid.uuid4().hex[:6]), review_status=review_status.value,
        judge_score=overall, judge_scores=scores, judge_rubric=RUBRIC, judge_rubric_version=1,
        judge_model="claude-haiku-4-5", judge_cost_usd=0.001, judged_at=datetime.now(UTC),
    )
    async with sessions.begin() as session:
        pk = await session.scalar(select(Conversation.id).where(Conversation.conversation_id == conversation_id))
        session.add(ConversationVerdict(
            conversation_pk=pk, batch_job_id=job, rubric_name=RUBRIC, rubric_version=1, judge_model="claude-haiku-4-5",
            overall=overall, criteria=scores, usage={}, cost_usd=0.001, raw_key="raw/x.json", judged_at=datetime.now(UTC),
        ))
    return conversation_id


@pytest.fixture
async def judged_job(sessions: async_sessionmaker, storage: Storage) -> tuple[str, uuid.UUID, dict[str, uuid.UUID]]:
    user = f"judy-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    conversations = {
        "best": await judged(sessions, storage, job, user, 4.8, 5),
        "good": await judged(sessions, storage, job, user, 4.5, 4),
        "wrong facts": await judged(sessions, storage, job, user, 3.4, 1),
        "worst": await judged(sessions, storage, job, user, 1.5, 2),
        "approved low": await judged(sessions, storage, job, user, 1.8, 2, ReviewStatus.APPROVED),
        "unjudged": await new_conversation(sessions, storage, job, user, dialogue("unjudged")),
    }
    return user, job, conversations


def names(listed: list, conversations: dict[str, uuid.UUID]) -> list[str]:
    by_id = {v: k for k, v in conversations.items()}
    return [by_id[row.conversation_id] for row in listed]


async def test_review_lists_verdicts_sorted_worst_first_and_filtered_by_score_and_criterion(
    sessions: async_sessionmaker, judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]]
) -> None:
    user, job, conversations = judged_job
    owner = Owner.of(user)

    worst_first = await list_conversations(sessions, owner, Selection(job=str(job)), sort="judge-score")
    best_first = await list_conversations(sessions, owner, Selection(job=str(job)), sort="-judge-score")
    low = await list_conversations(sessions, owner, Selection(job=str(job), judge=JudgeFilter(max_score=2)))
    high = await list_conversations(sessions, owner, Selection(job=str(job), judge=JudgeFilter(min_score=4.5)))
    wrong_facts = await list_conversations(
        sessions, owner, Selection(job=str(job), judge=JudgeFilter(criteria_max=parse_criterion_bounds(["topic_accuracy=1"], "--max-criterion")))
    )

    assert names(worst_first, conversations) == ["worst", "approved low", "wrong facts", "good", "best", "unjudged"]
    assert names(best_first, conversations) == ["best", "good", "wrong facts", "approved low", "worst", "unjudged"]
    assert sorted(names(low, conversations)) == ["approved low", "worst"]
    assert sorted(names(high, conversations)) == ["best", "good"]
    assert names(wrong_facts, conversations) == ["wrong facts"]
    row = worst_first[0]
    assert (row.judge_score, row.judge_rubric) == (1.5, f"{RUBRIC} v1")
    assert row.judge_scores is not None and row.judge_scores["topic_accuracy"] == 2
    assert worst_first[-1].judge_score is None and worst_first[-1].judge_scores is None


async def test_a_judge_score_order_pages_by_keyset_both_ways_with_the_unjudged_last(
    sessions: async_sessionmaker, storage: Storage, judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]]
) -> None:
    user, job, conversations = judged_job
    conversations["good too"] = await judged(sessions, storage, job, user, 4.5, 5)
    conversations["unjudged too"] = await new_conversation(sessions, storage, job, user, dialogue("unjudged"))
    owner, selection = Owner.of(user), Selection(job=str(job))
    expected = {
        "judge-score": ["worst", "approved low", "wrong facts", "good", "good too", "best", "unjudged", "unjudged too"],
        "-judge-score": ["best", "good", "good too", "wrong facts", "approved low", "worst", "unjudged", "unjudged too"],
    }
    for sort, order in expected.items():
        forward, position = [], Position()
        while True:
            page = await list_conversations(sessions, owner, selection, limit=3, position=position, sort=sort)
            forward += names(page[:2], conversations)
            if len(page) < 3:
                break
            position = Position(at=str(page[2].conversation_id))
        backward = await list_conversations(
            sessions, owner, selection, limit=3, position=Position(before=str(conversations["unjudged too"])), sort=sort
        )
        assert forward == order, sort
        assert names(backward, conversations) == order[-4:-1], f"{sort}: the page before, in order"


async def test_review_show_gives_each_criterions_reason_and_the_verdict_history(
    sessions: async_sessionmaker, storage: Storage, judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]]
) -> None:
    user, _job, conversations = judged_job

    shown = await show_conversation(sessions, storage, Owner.of(user), str(conversations["wrong facts"]))

    assert shown["judge"]["score"] == 3.4 and shown["judge"]["rubric_version"] == 1
    assert shown["judge"]["criteria"]["topic_accuracy"] == {"score": 1, "reason": "topic_accuracy as given."}
    assert [(h["rubric"], h["rubric_version"], h["score"]) for h in shown["judge_history"]] == [(RUBRIC, 1, 3.4)]


async def test_bulk_review_by_judge_score_changes_only_pending_judged_conversations(
    sessions: async_sessionmaker, judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]]
) -> None:
    user, job, conversations = judged_job
    owner = Owner.of(user)

    approved = await review(sessions, owner, ReviewStatus.APPROVED, Selection(job=str(job), judge=JudgeFilter(min_score=4.5)))
    rejected = await review(sessions, owner, ReviewStatus.REJECTED, Selection(job=str(job), judge=JudgeFilter(max_score=2)))

    assert sorted(approved.conversation_ids) == sorted([conversations["best"], conversations["good"]])
    # A person's approval stands: the bulk rule takes pending conversations only.
    assert (rejected.conversation_ids, rejected.unchanged) == ([conversations["worst"]], 0)
    async with sessions() as session:
        worst = (await session.scalars(select(Conversation).where(Conversation.conversation_id == conversations["worst"]))).one()
        unjudged = (await session.scalars(select(Conversation).where(Conversation.conversation_id == conversations["unjudged"]))).one()
    assert worst.review_reason == f"judge score 1.5 ({RUBRIC} v1)"
    assert unjudged.review_status == ReviewStatus.PENDING_REVIEW


def test_judge_bounds_out_of_range_are_refused_with_the_option_named() -> None:
    with pytest.raises(ValueError, match="--max-criterion takes CRITERION=SCORE"):
        parse_criterion_bounds(["topic_accuracy=9"], "--max-criterion")


async def test_a_judge_score_out_of_range_is_refused(
    sessions: async_sessionmaker, judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]]
) -> None:
    user, job, _ = judged_job
    with pytest.raises(BatchInputError, match="--min-judge-score must be between 1 and 5"):
        await list_conversations(sessions, Owner.of(user), Selection(job=str(job), judge=JudgeFilter(min_score=0.5)))


@pytest.fixture
async def export_settings(
    stack_client: Client, stack_settings: Settings, sessions: async_sessionmaker, storage: Storage
) -> AsyncIterator[Settings]:
    settings = stack_settings.model_copy(update={"task_queue": f"export-{uuid.uuid4()}"})
    activities = ExportActivities(sessions, storage, 2)
    async with Worker(
        stack_client,
        task_queue=settings.task_queue,
        workflows=[ExportWorkflow],
        activities=[activities.plan_export, activities.write_export_page, activities.finish_export, activities.fail_export],
    ):
        yield settings


async def test_export_by_judge_score_carries_each_verdict_and_the_rubric_version(
    sessions: async_sessionmaker, storage: Storage, stack_client: Client, export_settings: Settings,
    judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]], tmp_path: Path,
) -> None:
    user, job, conversations = judged_job
    owner = Owner.of(user)
    await review(sessions, owner, ReviewStatus.APPROVED, Selection(job=str(job), all_pending=True))

    result = await export(sessions, stack_client, export_settings, ExportRequest(
        owner=owner, out=str(tmp_path / "best"), jobs=(str(job),), min_judge_score=3.4,
    ))
    everything = await export(sessions, stack_client, export_settings, ExportRequest(
        owner=owner, out=str(tmp_path / "all"), jobs=(str(job),),
    ))

    records = [json.loads(line) for line in (tmp_path / "best" / "data" / "train.jsonl").read_text().splitlines()]
    assert result.count == 3 and everything.count == 6
    assert sorted(r["metadata"]["conversation_id"] for r in records) == sorted(
        str(conversations[n]) for n in ("best", "good", "wrong facts")
    )
    verdict = next(r["metadata"]["judge"] for r in records if r["metadata"]["conversation_id"] == str(conversations["wrong facts"]))
    assert verdict == {
        "score": 3.4, "scores": {**dict.fromkeys(CRITERIA, 3), "topic_accuracy": 1}, "rubric": RUBRIC, "rubric_version": 1,
        "model": "claude-haiku-4-5",
    }
    card = (tmp_path / "best" / "README.md").read_text()
    assert "## Judge" in card and f"| {RUBRIC} v1 | 3 |" in card and "- minimum judge score: 3.4" in card
    full_card = (tmp_path / "all" / "README.md").read_text()
    assert f"| {RUBRIC} v1 | 5 |" in full_card and "| not judged | 1 |" in full_card
    unjudged = [json.loads(line) for line in (tmp_path / "all" / "data" / "train.jsonl").read_text().splitlines()
                if str(conversations["unjudged"]) in line]
    assert "judge" not in unjudged[0]["metadata"]


async def test_calibration_counts_agreement_and_confusion_and_names_the_worst_disagreements(
    sessions: async_sessionmaker, storage: Storage
) -> None:
    user = f"cal-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    approved, rejected, pending = ReviewStatus.APPROVED, ReviewStatus.REJECTED, ReviewStatus.PENDING_REVIEW
    made = {
        "agree approve": await judged(sessions, storage, job, user, 4.6, 5, approved),
        "agree approve 2": await judged(sessions, storage, job, user, 3.9, 4, approved),
        "agree reject": await judged(sessions, storage, job, user, 1.7, 2, rejected),
        "judge too harsh": await judged(sessions, storage, job, user, 1.6, 1, approved),
        "judge too kind": await judged(sessions, storage, job, user, 4.2, 4, rejected),
        "judge bit kind": await judged(sessions, storage, job, user, 3.6, 4, rejected),
        "not decided": await judged(sessions, storage, job, user, 2.0, 2, pending),
    }
    await new_conversation(sessions, storage, job, user, dialogue("unjudged"), review_status=approved.value)

    result = await calibrate(sessions, job, threshold=3.5, top=2)

    assert result.decisions == 6
    assert (result.both_approve, result.both_reject) == (2, 1)
    assert (result.judge_approves_human_rejects, result.judge_rejects_human_approves) == (2, 1)
    assert result.agreement == 0.5
    assert result.mean_score_approved == round((4.6 + 3.9 + 1.6) / 3, 2)
    assert result.mean_score_rejected == round((1.7 + 4.2 + 3.6) / 3, 2)
    # Most disagreeing first: 1.6 is 1.9 under the threshold, 4.2 is 0.7 over; 3.6 (0.1) is cut by --top 2.
    assert [d.conversation_id for d in result.disagreements] == [made["judge too harsh"], made["judge too kind"]]
    harsh = result.disagreements[0]
    assert (harsh.human, harsh.criterion, harsh.criterion_score) == (approved, "topic_accuracy", 1)
    assert result.criteria["topic_accuracy"] == {"approved": round((5 + 4 + 1) / 3, 2), "rejected": round((2 + 4 + 4) / 3, 2)}


async def test_the_command_line_lists_reviews_calibrates_and_refuses_bad_bounds_in_one_line(
    cli_env: dict[str, str], judged_job: tuple[str, uuid.UUID, dict[str, uuid.UUID]]
) -> None:
    user, job, conversations = judged_job

    listed = starter(cli_env, "review", "list", "--job", str(job), "--user", user, "--sort", "judge-score",
                     "--max-criterion", "topic_accuracy=2", "--json")
    calibrated = starter(cli_env, "judge", "calibrate", "--job", str(job), "--user", user, "--json")
    rejected = starter(cli_env, "review", "reject", "--job", str(job), "--user", user, "--max-judge-score", "2", "--json")
    bad = starter(cli_env, "review", "list", "--user", user, "--min-criterion", "topic_accuracy=high")

    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["conversation_id"] for r in rows] == [str(conversations[n]) for n in ("worst", "approved low", "wrong facts")]
    assert rows[0]["judge_score"] == 1.5 and rows[0]["judge_scores"]["topic_accuracy"] == 2
    assert calibrated.returncode == 0, calibrated.stderr
    assert json.loads(calibrated.stdout)["decisions"] == 1  # "approved low": the only decision made so far
    assert json.loads(rejected.stdout)["conversation_ids"] == [str(conversations["worst"])]
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --min-criterion takes CRITERION=SCORE")
