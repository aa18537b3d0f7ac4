"""Export on the real stack: an ExportWorkflow with small pages writes a dataset directory (local
and S3) that Hugging Face `datasets` loads unchanged (plain JSON files and the card's `configs`),
whose every record passes TRL's conversational format rules, byte for byte the same for the
same selection and seed, with a manifest of ids and checksums and a row in `exports`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.errors import EXPORT_DESTINATION_NOT_EMPTY, EXPORT_STAND_IN_REFUSED
from activities.export import ExportActivities, parse_s3_location, split_at, split_sizes, training_messages
from brightrun.settings import Settings
from brightrun.storage import Storage
from models.enums import ClaudeProvider, ExportFormat, ExportStatus, ReviewStatus, UserRole
from models.messages import ExportFinishInput, ExportInput, ExportPageInput, ExportPlan, ExportSelection, SplitShare
from models.tables import Conversation, Export
from service import users
from service.access import share_job
from service.batches import BatchInputError
from service.export import ExportFailedError, ExportRequest, export, parse_splits
from service.review import Owner
from tests.conversations import approved_conversation_without_its_final_file, dialogue, new_conversation, new_job
from tests.fakes import FakeExportActivities
from tests.test_starter import starter
from workflows.export import ExportWorkflow, export_workflow_id

PAGE_SIZE = 3


def test_splits_parse_and_add_up_exactly() -> None:
    assert parse_splits("train=0.9,validation=0.1") == [SplitShare(name="train", fraction=0.9), SplitShare(name="validation", fraction=0.1)]
    for bad in ["train=0.9", "train", "train=x", "Train=1", "train=0.5,train=0.5", "train=1.5,test=-0.5"]:
        with pytest.raises(BatchInputError, match="--split"):
            parse_splits(bad)
    shares = parse_splits("train=0.8,validation=0.1,test=0.1")
    for total in (0, 1, 7, 10, 11, 99):
        sizes = split_sizes(total, shares)
        assert sum(sizes.values()) == total and list(sizes) == ["train", "validation", "test"]
    assert split_sizes(11, shares) == {"train": 9, "validation": 1, "test": 1}
    assert [split_at(p, {"train": 2, "validation": 1}) for p in range(3)] == ["train", "train", "validation"]


def test_a_record_starts_with_the_system_prompt_and_ends_with_the_assistant() -> None:
    turns = dialogue("x", turns=5)  # ends with a user turn that has no answer
    messages = training_messages(turns, "You are an advisor.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert parse_s3_location("s3://bucket/a/b") == ("bucket", "a/b") and parse_s3_location("/tmp/x") is None


def assert_trl_conversational(record: dict) -> None:
    """The rules TRL applies to a conversational (`messages`) example: a list of {role, content}
    messages, the system prompt first, then user and assistant alternating, nothing empty. (TRL
    itself needs torch, too heavy for this suite, so the rules are checked here.)"""
    messages = record["messages"]
    assert isinstance(messages, list) and messages
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"].strip() for m in messages)
    assert messages[0]["role"] == "system"
    roles = [m["role"] for m in messages[1:]]
    assert roles and roles == ["user", "assistant"] * (len(roles) // 2), roles


@pytest.fixture
async def export_settings(
    stack_client: Client, stack_settings: Settings, sessions: async_sessionmaker, storage: Storage
) -> AsyncIterator[Settings]:
    """A worker with the export workflow and pages of 3 conversations, on its own task queue."""
    settings = stack_settings.model_copy(update={"task_queue": f"export-{uuid.uuid4()}"})
    activities = ExportActivities(sessions, storage, PAGE_SIZE)
    async with Worker(
        stack_client,
        task_queue=settings.task_queue,
        workflows=[ExportWorkflow],
        activities=[activities.plan_export, activities.write_export_page, activities.finish_export, activities.fail_export],
    ):
        yield settings


@pytest.fixture
async def approved_set(sessions: async_sessionmaker, storage: Storage) -> tuple[str, uuid.UUID, list[uuid.UUID]]:
    """Ten approved conversations of one user's job, plus some that must not be exported."""
    user = f"yara-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    approved = [
        await new_conversation(sessions, storage, job, user, dialogue(f"seed{n}", turns=6 + n % 3),
                               review_status=ReviewStatus.APPROVED.value, quality_score=0.6 + n * 0.04)
        for n in range(10)
    ]
    await new_conversation(sessions, storage, job, user, dialogue("pending"))
    await new_conversation(sessions, storage, job, user, dialogue("no"), review_status=ReviewStatus.REJECTED.value)
    other = f"zed-{uuid.uuid4().hex[:6]}"
    await new_conversation(sessions, storage, await new_job(sessions, other), other, dialogue("theirs"),
                           review_status=ReviewStatus.APPROVED.value)
    return user, job, approved


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_an_export_loads_with_datasets_passes_trl_rules_and_is_reproducible(
    export_settings: Settings, sessions: async_sessionmaker, stack_client: Client, tmp_path: Path,
    approved_set: tuple[str, uuid.UUID, list[uuid.UUID]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    user, job, approved = approved_set
    request = ExportRequest(owner=Owner.of(user), out=str(tmp_path / "first"), jobs=(str(job),),
                            split="train=0.8,validation=0.2", seed=7)

    result = await export(sessions, stack_client, export_settings, request)
    again = await export(sessions, stack_client, export_settings, ExportRequest(**{**request.__dict__, "out": str(tmp_path / "again")}))
    reseeded = await export(sessions, stack_client, export_settings, ExportRequest(**{**request.__dict__, "out": str(tmp_path / "seed8"), "seed": 8}))

    first = files_of(tmp_path / "first")
    assert (result.count, result.splits) == (10, {"train": 8, "validation": 2})
    assert sorted(first) == ["README.md", "data/train.jsonl", "data/validation.jsonl", "manifest.json"]
    assert sorted(result.files) == sorted(first)
    assert files_of(tmp_path / "again") == first, "the same selection and seed give the same bytes"
    assert files_of(tmp_path / "seed8")["data/train.jsonl"] != first["data/train.jsonl"]
    assert reseeded.count == again.count == 10

    # Every approved conversation exactly once, with its line's checksum; nothing else.
    manifest = json.loads(first["manifest.json"])
    lines = {split: first[f"data/{split}.jsonl"].splitlines() for split in ("train", "validation")}
    assert sorted(uuid.UUID(c["conversation_id"]) for c in manifest["conversations"]) == sorted(approved)
    by_id = {json.loads(line)["metadata"]["conversation_id"]: (split, line) for split in lines for line in lines[split]}
    for entry in manifest["conversations"]:
        split, line = by_id[entry["conversation_id"]]
        assert entry["split"] == split and entry["sha256"] == hashlib.sha256(line + b"\n").hexdigest()
    assert manifest["files"]["data/train.jsonl"]["sha256"] == hashlib.sha256(first["data/train.jsonl"]).hexdigest()
    assert manifest["seed"] == 7 and manifest["selection"]["review_status"] == "approved"

    # The card: YAML front matter the Hub reads, with configs mapping files to splits.
    card = first["README.md"].decode()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train.jsonl"}, {"split": "validation", "path": "data/validation.jsonl"}]}]
    assert front["size_categories"] == ["n<1K"] and front["language"] == ["en"] and front["license"]
    assert "| David Chen | 10 |" in card and "| template | 10 |" in card
    assert "| Claude (Anthropic API) | api.anthropic.com | 10 |" in card and "placeholder" not in card.lower()
    assert manifest["provenance"] == {"placeholder_conversations": 0, "sources": [
        {"provider": "anthropic", "api_host": "api.anthropic.com", "conversations": 10}]}
    assert result.placeholder == 0

    # Hugging Face datasets, offline: the plain JSON loader and the card's configs.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    cache = str(tmp_path / "hf-cache")
    plain = await asyncio.to_thread(
        load_dataset, "json", data_files={s: str(tmp_path / "first" / f"data/{s}.jsonl") for s in lines}, cache_dir=cache
    )
    by_card = await asyncio.to_thread(load_dataset, str(tmp_path / "first"), cache_dir=cache)
    for dataset in (plain, by_card):
        assert {name: len(split) for name, split in dataset.items()} == {"train": 8, "validation": 2}
    for record in plain["train"]:
        assert_trl_conversational(record)
        assert record["messages"][0]["content"] == export_settings.export_system_prompt
        assert record["metadata"]["persona"] == "David Chen" and record["metadata"]["quality_score"] >= 0.6
        assert (record["metadata"]["provider"], record["metadata"]["provider_host"]) == ("anthropic", "api.anthropic.com")
    for record in by_card["validation"]:
        assert_trl_conversational(record)

    async with sessions() as session:
        row = await session.get(Export, result.export_id)
    assert (row.status, row.created_by, row.conversation_count, row.split_counts) == (
        ExportStatus.COMPLETED, user, 10, {"train": 8, "validation": 2}
    )
    assert row.location == str(tmp_path / "first") and row.selection["seed"] == 7 and row.completed_at


async def test_sharegpt_to_s3_and_the_selection_filters(
    export_settings: Settings, sessions: async_sessionmaker, stack_client: Client, storage: Storage,
    approved_set: tuple[str, uuid.UUID, list[uuid.UUID]],
) -> None:
    user, _, _ = approved_set
    prefix = f"exports/{uuid.uuid4().hex[:8]}"
    request = ExportRequest(owner=Owner.of(user), out=f"s3://{storage.conversation_bucket}/{prefix}",
                            format=ExportFormat.SHAREGPT, min_quality=0.8, seed=1)

    result = await export(sessions, stack_client, export_settings, request)

    assert result.count == 5 and result.splits == {"train": 5}  # quality 0.6 + n * 0.04 >= 0.8 for n >= 5
    body = await storage.get_bytes(storage.conversation_bucket, f"{prefix}/data/train.jsonl")
    records = [json.loads(line) for line in body.splitlines()]
    assert len(records) == 5 and all(r["metadata"]["quality_score"] >= 0.8 for r in records)
    assert {turn["from"] for r in records for turn in r["conversations"]} == {"system", "human", "gpt"}
    manifest = json.loads(await storage.get_bytes(storage.conversation_bucket, f"{prefix}/manifest.json"))
    assert manifest["files"]["data/train.jsonl"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert await storage.get_bytes_or_none(storage.conversation_bucket, f"{prefix}/.parts/train-000000") is None


async def test_refusals_name_the_problem(
    export_settings: Settings, sessions: async_sessionmaker, stack_client: Client, storage: Storage, tmp_path: Path,
    approved_set: tuple[str, uuid.UUID, list[uuid.UUID]],
) -> None:
    user, job, _ = approved_set
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    taken = f"exports/{uuid.uuid4().hex[:8]}"
    await storage.put_bytes(storage.conversation_bucket, f"{taken}/keep.txt", b"mine", "text/plain")
    cases = [
        (ExportRequest(owner=Owner.of("someone-else"), out=str(tmp_path / "a"), jobs=(str(job),)), f"job {job} not found"),
        (ExportRequest(owner=Owner.of("someone-else"), out=str(tmp_path / "a")), "nothing to export"),
        (ExportRequest(owner=Owner.of(user), out=f"s3://{storage.conversation_bucket}/{taken}"),
         r"already exists and is not an empty directory or prefix \(it holds keep.txt\)"),
        (ExportRequest(owner=Owner.of(user), out=str(tmp_path / "full")),
         r"already exists and is not an empty directory or prefix \(it holds keep.txt\)"),
        (ExportRequest(owner=Owner.of(user), out="s3:///x"), "names no bucket"),
        (ExportRequest(owner=Owner.of(user), out="s3://no-such-bucket/x"), "S3 has no bucket 'no-such-bucket'"),
        (ExportRequest(owner=Owner.of(user), out=str(tmp_path / "a"), split="train=0.5"), "add up to 0.5"),
    ]
    for request, message in cases:
        with pytest.raises(BatchInputError, match=message):
            await export(sessions, stack_client, export_settings, request)
    async with sessions() as session:
        recorded = (await session.scalars(select(Export.status).where(Export.created_by == user))).all()
    assert recorded == [], "a refused --out (a typo, say) records no failed export"
    admin = await export(sessions, stack_client, export_settings,
                         ExportRequest(owner=Owner.of("someone-else", admin=True), out=str(tmp_path / "b"), jobs=(str(job),)))
    assert admin.count == 10
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    assert await storage.list_keys(storage.conversation_bucket, f"{taken}/") == [f"{taken}/keep.txt"]


async def test_a_reviewer_exports_their_own_and_the_shared_jobs_conversations_and_no_others(
    export_settings: Settings, sessions: async_sessionmaker, stack_client: Client, storage: Storage, tmp_path: Path,
    approved_set: tuple[str, uuid.UUID, list[uuid.UUID]],
) -> None:
    owner, job, _ = approved_set
    reviewer = f"rita-{uuid.uuid4().hex[:6]}"
    await users.add_user(sessions, reviewer, UserRole.REVIEWER, users.new_password())
    own = await new_conversation(sessions, storage, await new_job(sessions, reviewer), reviewer, dialogue("mine"),
                                 review_status=ReviewStatus.APPROVED.value)
    await share_job(sessions, Owner.of(owner), str(job), reviewer)

    everything = await export(sessions, stack_client, export_settings,
                              ExportRequest(owner=Owner.of(reviewer), out=str(tmp_path / "all")))
    shared_only = await export(sessions, stack_client, export_settings,
                               ExportRequest(owner=Owner.of(reviewer), out=str(tmp_path / "job"), jobs=(str(job),)))

    assert everything.count == 11, "the reviewer's own approved conversation and the shared job's ten"
    exported = {json.loads(line)["metadata"]["conversation_id"] for line in (tmp_path / "all" / "data" / "train.jsonl").read_text().splitlines()}
    assert str(own) in exported
    assert shared_only.count == 10


@pytest.mark.parametrize("where", ["local", "s3"])
async def test_two_exports_to_one_place_never_write_each_others_files(
    sessions: async_sessionmaker, storage: Storage, tmp_path: Path, where: str,
    approved_set: tuple[str, uuid.UUID, list[uuid.UUID]],
) -> None:
    user, _, _ = approved_set
    prefix = f"exports/{uuid.uuid4().hex[:8]}"
    location = str(tmp_path / "shared") if where == "local" else f"s3://{storage.conversation_bucket}/{prefix}"
    first, second = (
        ExportInput(export_id=uuid.uuid4(), selection=ExportSelection(user=user, system_prompt="s"), location=location)
        for _ in range(2)
    )
    activities = ExportActivities(sessions, storage, PAGE_SIZE)

    await activities.plan_export(first)  # the first export has claimed the place and writes there
    with pytest.raises(ApplicationError) as refused:
        await activities.plan_export(second)
    page = await activities.write_export_page(
        ExportPageInput(export=first, plan=ExportPlan(total=10, split_sizes={"train": 10}), page=0, first_position=0)
    )
    result = await activities.finish_export(
        ExportFinishInput(export=first, plan=ExportPlan(total=10, split_sizes={"train": 10}), pages=1)
    )

    assert refused.value.type == EXPORT_DESTINATION_NOT_EMPTY and refused.value.non_retryable
    assert f"(it holds .parts/{first.export_id})" in refused.value.message
    assert page.count == PAGE_SIZE and result.count == PAGE_SIZE
    if where == "local":
        written = sorted(files_of(tmp_path / "shared"))
    else:
        written = sorted(key.removeprefix(f"{prefix}/") for key in await storage.list_keys(storage.conversation_bucket, f"{prefix}/"))
    assert written == ["README.md", "data/train.jsonl", "manifest.json"], "no part is left, of either export"


async def test_stand_in_conversations_leave_only_when_allowed_and_marked_placeholder(
    export_settings: Settings, sessions: async_sessionmaker, stack_client: Client, storage: Storage, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = f"sam-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    approved = ReviewStatus.APPROVED.value
    written_by = {
        await new_conversation(sessions, storage, job, user, dialogue("real"), review_status=approved): ("anthropic", "api.anthropic.com"),
        await new_conversation(sessions, storage, job, user, dialogue("standin"), review_status=approved,
                               provider=ClaudeProvider.OFFLINE_STANDIN.value, provider_host="127.0.0.1"): ("offline-standin", "127.0.0.1"),
        # Written before providers were recorded: unknown, so no more trusted than the stand-in's.
        await new_conversation(sessions, storage, job, user, dialogue("old"), review_status=approved,
                               provider=None, provider_host=None): ("unknown", None),
    }

    with pytest.raises(BatchInputError, match=r"^2 of the 3 conversations selected were written by the offline Claude "
                       r"stand-in \(or before providers were recorded\): .* pass --allow-stand-in to export them"):
        await export(sessions, stack_client, export_settings, ExportRequest(owner=Owner.of(user), out=str(tmp_path / "no")))
    result = await export(sessions, stack_client, export_settings,
                          ExportRequest(owner=Owner.of(user), out=str(tmp_path / "marked"), allow_stand_in=True))

    assert not (tmp_path / "no").exists() and (result.count, result.placeholder) == (3, 2)
    exported = files_of(tmp_path / "marked")
    card = exported["README.md"].decode()
    _, front_matter, text = card.split("---\n", 2)
    warning = "PLACEHOLDER TEXT, NOT TRAINING DATA: 2 of these 3 conversations were written by the offline Claude stand-in"
    assert text.splitlines()[0].startswith(f"**{warning}"), "the card's text says it first"
    assert front_matter.splitlines()[0].startswith(f"# {warning}"), "and so does the front matter, which the Hub needs first"
    assert "placeholder" in yaml.safe_load(front_matter)["tags"]
    assert "3 synthetic conversations partly of placeholder text (see Provenance)" in card and "generated with Claude" not in card
    assert "| the offline Claude stand-in: placeholder text | 127.0.0.1 | 1 |" in card
    assert "| unrecorded (written before providers were recorded) | - | 1 |" in card
    manifest = json.loads(exported["manifest.json"])
    assert manifest["provenance"] == {"placeholder_conversations": 2, "sources": [
        {"provider": "anthropic", "api_host": "api.anthropic.com", "conversations": 1},
        {"provider": "offline-standin", "api_host": "127.0.0.1", "conversations": 1},
        {"provider": "unknown", "api_host": None, "conversations": 1},
    ]}
    assert {uuid.UUID(c["conversation_id"]): c["provider"] for c in manifest["conversations"]} == {
        conversation: provider for conversation, (provider, _) in written_by.items()
    }
    records = [json.loads(line) for line in exported["data/train.jsonl"].splitlines()]
    assert {uuid.UUID(r["metadata"]["conversation_id"]): (r["metadata"]["provider"], r["metadata"]["provider_host"])
            for r in records} == written_by
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    by_card = await asyncio.to_thread(load_dataset, str(tmp_path / "marked"), cache_dir=str(tmp_path / "hf-cache"))
    assert {name: len(split) for name, split in by_card.items()} == {"train": 3}


async def test_a_page_refuses_a_stand_in_conversation_the_export_was_not_allowed(
    sessions: async_sessionmaker, storage: Storage, tmp_path: Path
) -> None:
    user = f"tia-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    # Made after the export's check (a job still running, say).
    late = await new_conversation(sessions, storage, job, user, dialogue("late"), provider=ClaudeProvider.OFFLINE_STANDIN.value)
    export_input = ExportInput(export_id=uuid.uuid4(), selection=ExportSelection(user=user, review_status=None, system_prompt="s"),
                               location=str(tmp_path / "x"))

    with pytest.raises(ApplicationError) as refused:
        await ExportActivities(sessions, storage, PAGE_SIZE).write_export_page(
            ExportPageInput(export=export_input, plan=ExportPlan(total=1, split_sizes={"train": 1}), page=0, first_position=0)
        )

    assert refused.value.type == EXPORT_STAND_IN_REFUSED and refused.value.non_retryable
    assert refused.value.message.startswith(f"conversation {late} was not written by Claude's API (provider: offline-standin)")
    assert not (tmp_path / "x").exists()


async def test_the_card_counts_what_the_pages_wrote_though_a_conversation_was_unapproved_since(
    sessions: async_sessionmaker, storage: Storage, tmp_path: Path
) -> None:
    user = f"una-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    approved = ReviewStatus.APPROVED.value
    await new_conversation(sessions, storage, job, user, dialogue("real"), review_status=approved)
    standin = await new_conversation(sessions, storage, job, user, dialogue("standin"), review_status=approved,
                                     provider=ClaudeProvider.OFFLINE_STANDIN.value, provider_host="127.0.0.1")
    export_input = ExportInput(export_id=uuid.uuid4(), location=str(tmp_path / "x"),
                               selection=ExportSelection(user=user, system_prompt="s", allow_stand_in=True))
    steps, env = ExportActivities(sessions, storage, PAGE_SIZE), ActivityEnvironment()
    plan = await env.run(steps.plan_export, export_input)
    page = await env.run(steps.write_export_page, ExportPageInput(export=export_input, plan=plan, page=0, first_position=0))
    # A reviewer rejects the stand-in's conversation after the page wrote it, before the finish.
    async with sessions.begin() as session:
        await session.execute(update(Conversation).where(Conversation.conversation_id == standin)
                              .values(review_status=ReviewStatus.REJECTED.value))

    result = await env.run(steps.finish_export, ExportFinishInput(export=export_input, plan=plan, pages=1, sources=page.sources))

    assert (result.count, result.placeholder) == (2, 1), "the data holds the stand-in's text: the count says so"
    card = (tmp_path / "x" / "README.md").read_text()
    assert card.split("---\n", 2)[2].startswith("**PLACEHOLDER TEXT, NOT TRAINING DATA: 1 of these 2 conversations")
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["provenance"]["sources"] == [
        {"provider": "anthropic", "api_host": "api.anthropic.com", "conversations": 1},
        {"provider": "offline-standin", "api_host": "127.0.0.1", "conversations": 1},
    ]


async def test_a_missing_final_file_fails_the_export_with_the_reason_on_its_row(
    export_settings: Settings, sessions: async_sessionmaker, stack_client: Client, storage: Storage, tmp_path: Path,
) -> None:
    user, key = await approved_conversation_without_its_final_file(sessions, storage)

    with pytest.raises(ExportFailedError, match=f"the final file {key} is missing"):
        await export(sessions, stack_client, export_settings, ExportRequest(owner=Owner.of(user), out=str(tmp_path / "x")))
    again = ExportRequest(owner=Owner.of(user), out=str(tmp_path / "x"))
    with pytest.raises(ExportFailedError, match="is missing"):  # not refused as a place that holds files
        await export(sessions, stack_client, export_settings, again)

    assert files_of(tmp_path / "x") == {}, "a failed export leaves no part behind"

    async with sessions() as session:
        rows = (await session.scalars(select(Export).where(Export.created_by == user))).all()
    assert len(rows) == 2 and all(row.status == ExportStatus.FAILED and "is missing" in row.error_message for row in rows)


@pytest.mark.usefixtures("pipeline_worker")
async def test_the_cli_exports_and_prints_the_contract_json(
    cli_env: dict[str, str], tmp_path: Path, approved_set: tuple[str, uuid.UUID, list[uuid.UUID]]
) -> None:
    user, job, _ = approved_set
    out = tmp_path / "cli"
    result = await asyncio.to_thread(
        starter, cli_env, "export", "--job", str(job), "--status", "approved", "--split", "train=0.9,validation=0.1",
        "--seed", "3", "--format", "messages", "--user", user, "--out", str(out), "--json",
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["count"] == 10 and printed["splits"] == {"train": 9, "validation": 1}
    assert printed["workflow_id"] == f"export-{printed['export_id']}"
    assert sorted(printed["files"]) == sorted(str(out / f) for f in ("README.md", "manifest.json", "data/train.jsonl", "data/validation.jsonl"))

    refused = await asyncio.to_thread(starter, cli_env, "export", "--user", user, "--out", str(out), "--split", "train=2")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    # Printed for a person on an 80-column terminal: a path wider than that stays on one line, to copy.
    deep = tmp_path / "a-directory-whose-path-is-wider-than-an-80-column-terminal"
    plain = await asyncio.to_thread(
        starter, {**cli_env, "COLUMNS": "80"}, "export", "--job", str(job), "--status", "approved", "--user", user,
        "--out", str(deep),
    )
    assert plain.returncode == 0, plain.stderr
    assert len(f"  {deep / 'manifest.json'}") > 80 and f"  {deep / 'manifest.json'}" in plain.stdout.splitlines()
    assert f"load_dataset(\"{deep}\")" in plain.stdout.splitlines()[-1]


@pytest.mark.usefixtures("pipeline_worker")
async def test_the_cli_exports_stand_in_conversations_only_with_allow_stand_in(
    cli_env: dict[str, str], sessions: async_sessionmaker, storage: Storage, tmp_path: Path
) -> None:
    user = f"uma-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    await new_conversation(sessions, storage, job, user, dialogue("standin"), review_status=ReviewStatus.APPROVED.value,
                           provider=ClaudeProvider.OFFLINE_STANDIN.value, provider_host="127.0.0.1")
    out = tmp_path / "cli"

    refused = await asyncio.to_thread(starter, cli_env, "export", "--user", user, "--out", str(out), "--json")
    allowed = await asyncio.to_thread(starter, cli_env, "export", "--user", user, "--out", str(out), "--allow-stand-in", "--json")

    assert refused.returncode == 2 and refused.stdout == "", refused.stderr
    assert refused.stderr.startswith("error: 1 of the 1 conversations selected were written by the offline Claude stand-in")
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], "one line"
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["placeholder"] == 1
    assert "PLACEHOLDER TEXT, NOT TRAINING DATA" in (out / "README.md").read_text().split("---\n", 2)[2].splitlines()[0]


async def test_the_workflow_writes_page_after_page_and_reports_progress(ts_client: Client, task_queue: str) -> None:
    fake = FakeExportActivities(total=5, page_size=2)
    export_id = uuid.uuid4()
    request = ExportInput(export_id=export_id, selection=ExportSelection(user="u", system_prompt="s"), location="/tmp/x")
    async with Worker(ts_client, task_queue=task_queue, workflows=[ExportWorkflow], activities=fake.all()):
        handle = await ts_client.start_workflow(ExportWorkflow.run, request, id=export_workflow_id(export_id), task_queue=task_queue)
        result = await handle.result()
        progress = await handle.query(ExportWorkflow.progress)

    assert fake.pages == [2, 2, 1, 0] and result.count == 5
    assert (progress.status, progress.written, progress.total) == (ExportStatus.COMPLETED, 5, 5)
