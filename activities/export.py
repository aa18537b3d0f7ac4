"""Export of a training set: pages of conversations streamed into a dataset directory (local or
S3) that Hugging Face `datasets` and TRL load unchanged.

Layout of an export:
    data/{split}.jsonl   one conversation per line, in the chat `messages` (or ShareGPT) format
    README.md            dataset card: YAML front matter with `configs`, counts by persona/arc/topic/tier
    manifest.json        selection, seed, every file's SHA-256, who wrote the conversations, every
                         conversation id with its split, its provider and the SHA-256 of its line

Every record, the manifest and the card say who wrote the text: Anthropic's API (and its host) or
the offline stand-in, whose text is placeholder. Stand-in conversations (and those of unknown
provider, written before it was recorded) are exported only with `allow_stand_in`, and then the
card's first line says the text is placeholder.

Order and splits come from a seeded hash of each conversation id, so the same selection and seed
give the same bytes. Each page writes its own part files under `.parts/{export_id}/` (a retried
page overwrites its own), and the last step joins them as streams: memory stays flat whatever the
size. The first step claims the destination where the worker writes it: it must hold nothing but
this export's parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from sqlalchemy import ColumnElement, Text, cast, func, literal, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity

from activities.data_errors import classify_data_errors
from activities.errors import EXPORT_DESTINATION_NOT_EMPTY, EXPORT_FILE_MISSING, EXPORT_STAND_IN_REFUSED, permanent
from brightrun.storage import Storage
from models.enums import ClaudeProvider, ExportFormat, ExportStatus
from models.messages import (
    ExportCursor,
    ExportFailure,
    ExportFinishInput,
    ExportInput,
    ExportPage,
    ExportPageInput,
    ExportPlan,
    ExportResult,
    ExportSelection,
    ProviderCount,
    SplitShare,
    add_provider_counts,
)
from models.tables import Conversation, EmotionalArc, Export, Persona, TrainingTopic

S3_SCHEME = "s3://"
PARTS = ".parts"
CHUNK_BYTES = 1 << 20
S3_PART_BYTES = 8 << 20  # multipart uploads need parts of 5 MiB or more (all but the last)
DOWNLOADS_IN_FLIGHT = 16
CLAIM_FILE = "claimed"  # in the export's own parts: written before the destination is checked
SHOWN_ENTRIES = 3  # of a destination that is not empty, named in the refusal
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
CARD_FILE, MANIFEST_FILE = "README.md", "manifest.json"
# The provider of a conversation written before providers were recorded.
UNKNOWN_PROVIDER = "unknown"


def data_file(split: str) -> str:
    return f"data/{split}.jsonl"


# --- selection, order and splits -----------------------------------------------------------


def selection_conditions(selection: ExportSelection) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if selection.user is not None:
        conditions.append(
            or_(Conversation.created_by == selection.user, Conversation.batch_job_id.in_(selection.shared_job_ids))
        )
    if selection.job_ids:
        conditions.append(Conversation.batch_job_id.in_(selection.job_ids))
    if selection.review_status is not None:
        conditions.append(Conversation.review_status == selection.review_status.value)
    if selection.min_quality is not None:
        conditions.append(Conversation.quality_score >= selection.min_quality)
    if selection.min_judge_score is not None:
        conditions.append(Conversation.judge_score >= selection.min_judge_score)
    return conditions


def judge_metadata(row: Any) -> dict[str, Any]:
    """A judged conversation's verdict in its record's metadata (an unjudged one's record has
    none): the overall score, each criterion's, and the rubric version that gave them."""
    if row.judge_score is None:
        return {}
    scores = {key: c["score"] for key, c in (row.judge_scores or {}).items()}
    return {
        "judge": {
            "score": row.judge_score,
            "scores": scores,
            "rubric": row.judge_rubric,
            "rubric_version": row.judge_rubric_version,
            "model": row.judge_model,
        }
    }


def not_written_by_claude() -> ColumnElement[bool]:
    """A conversation the offline stand-in wrote, or one whose provider is unknown."""
    return or_(Conversation.provider.is_(None), Conversation.provider != ClaudeProvider.ANTHROPIC.value)


@dataclass(frozen=True)
class Provenance:
    """Who wrote an export's conversations, by provider and API host."""

    sources: list[ProviderCount]

    @property
    def placeholder(self) -> int:
        """Conversations not written by Anthropic's API."""
        return sum(s.conversations for s in self.sources if s.provider != ClaudeProvider.ANTHROPIC)

    def as_json(self) -> dict[str, Any]:
        return {"placeholder_conversations": self.placeholder, "sources": [source.model_dump() for source in self.sources]}


def order_key(seed: int) -> ColumnElement[str]:
    """A seeded hash of the id: a shuffle that any page can resume, the same for the same seed."""
    return func.md5(func.concat(literal(f"{seed}:"), cast(Conversation.conversation_id, Text))).collate("C")


def split_sizes(total: int, splits: list[SplitShare]) -> dict[str, int]:
    """Exact sizes that add up to the total (largest remainder; ties to the split named first)."""
    exact = [(share.name, total * share.fraction) for share in splits]
    sizes = {name: math.floor(value) for name, value in exact}
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - sizes[exact[i][0]]), i))
    for i in by_remainder[: total - sum(sizes.values())]:
        sizes[exact[i][0]] += 1
    return sizes


def split_at(position: int, sizes: dict[str, int]) -> str:
    for name, size in sizes.items():
        if position < size:
            return name
        position -= size
    return name  # rows added since the plan go to the last split


def size_category(count: int) -> str:
    """The Hugging Face Hub's size_categories value."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((label for bound, label in bounds if count < bound), "1M<n<10M")


# --- records -------------------------------------------------------------------------------


def training_messages(turns: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """System first, then the alternating turns. A trailing user turn is dropped: an example ends
    with the answer the model learns."""
    if turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    return [{"role": "system", "content": system_prompt}, *({"role": t["role"], "content": t["content"]} for t in turns)]


def training_record(export_format: ExportFormat, messages: list[dict[str, str]], metadata: dict[str, Any]) -> dict[str, Any]:
    if export_format == ExportFormat.SHAREGPT:
        turns = [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages]
        return {"conversations": turns, "metadata": metadata}
    return {"messages": messages, "metadata": metadata}


def record_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"


# --- where an export is written ----------------------------------------------------------------


class ExportTarget(Protocol):
    """A dataset directory: local or under an S3 prefix. Blocking: called in a worker thread."""

    def write(self, path: str, body: bytes) -> None: ...
    def read_chunks(self, path: str) -> Iterator[bytes]: ...
    def write_stream(self, path: str, chunks: Iterable[bytes]) -> None: ...
    def other_entries(self, export_id: uuid.UUID) -> list[str]:
        """Up to SHOWN_ENTRIES paths the destination holds besides this export's parts."""
        ...
    def remove_parts(self, export_id: uuid.UUID) -> None: ...


class LocalTarget:
    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, path: str) -> Path:
        full = self._root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        return full

    def write(self, path: str, body: bytes) -> None:
        self.write_stream(path, [body])

    def read_chunks(self, path: str) -> Iterator[bytes]:
        with open(self._root / path, "rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk

    def write_stream(self, path: str, chunks: Iterable[bytes]) -> None:
        # Written beside and renamed: a reader never sees half a file.
        final = self._path(path)
        partial = final.with_name(final.name + ".partial")
        with open(partial, "wb") as out:
            out.writelines(chunks)
        partial.replace(final)

    def other_entries(self, export_id: uuid.UUID) -> list[str]:
        if not self._root.exists():
            return []
        if not self._root.is_dir():
            return [str(self._root)]
        entries = sorted(path.name for path in self._root.iterdir() if path.name != PARTS)
        parts = self._root / PARTS
        if parts.is_dir():
            entries += sorted(f"{PARTS}/{path.name}" for path in parts.iterdir() if path.name != str(export_id))
        return entries[:SHOWN_ENTRIES]

    def remove_parts(self, export_id: uuid.UUID) -> None:
        shutil.rmtree(self._root / _parts_of(export_id), ignore_errors=True)
        with contextlib.suppress(OSError):  # another export's parts are there, or none were ever written
            (self._root / PARTS).rmdir()


class S3Target:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")

    def _key(self, path: str) -> str:
        return f"{self._prefix}/{path}" if self._prefix else path

    def _keys(self, under: str) -> Iterator[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=under)
        for page in pages:
            yield from (item["Key"] for item in page.get("Contents", []))

    def write(self, path: str, body: bytes) -> None:
        self._client.put_object(Bucket=self._bucket, Key=self._key(path), Body=body)

    def read_chunks(self, path: str) -> Iterator[bytes]:
        body = self._client.get_object(Bucket=self._bucket, Key=self._key(path))["Body"]
        yield from body.iter_chunks(CHUNK_BYTES)

    def write_stream(self, path: str, chunks: Iterable[bytes]) -> None:
        """A multipart upload fed from the chunks, one part of S3_PART_BYTES in memory at a time."""
        key = self._key(path)
        upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []

        def send(body: bytes) -> None:
            number = len(parts) + 1
            etag = self._client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})

        try:
            buffer = bytearray()
            for chunk in chunks:
                buffer += chunk
                if len(buffer) >= S3_PART_BYTES:
                    send(bytes(buffer))
                    buffer.clear()
            if buffer or not parts:
                send(bytes(buffer))
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
            raise

    def other_entries(self, export_id: uuid.UUID) -> list[str]:
        # The prefix is a directory: s3://b/x holds x/..., never x2/...
        under = self._key("")
        entries: list[str] = []
        for key in self._keys(under):
            path = key.removeprefix(under)
            if path.startswith(f"{PARTS}/"):  # named as a local directory's: .parts/{export_id}
                path = "/".join(path.split("/", 2)[:2])
            if path != _parts_of(export_id) and path not in entries:
                entries.append(path)
                if len(entries) == SHOWN_ENTRIES:
                    break
        return entries

    def remove_parts(self, export_id: uuid.UUID) -> None:
        keys = [{"Key": key} for key in self._keys(self._key(_parts_of(export_id)) + "/")]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
            self._client.delete_objects(Bucket=self._bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})


def parse_s3_location(location: str) -> tuple[str, str] | None:
    """(bucket, prefix) of an s3:// location; None for a local directory."""
    if not location.startswith(S3_SCHEME):
        return None
    bucket, _, prefix = location[len(S3_SCHEME) :].partition("/")
    return bucket, prefix


def export_target(location: str, storage: Storage) -> ExportTarget:
    s3 = parse_s3_location(location)
    if s3 is None:
        return LocalTarget(Path(location))
    return S3Target(storage.client, *s3)


class _Digest:
    """Hashes the bytes that stream through it, and counts them and their lines."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.lines = 0

    def through(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.sha256.update(chunk)
            self.size += len(chunk)
            self.lines += chunk.count(b"\n")
            yield chunk


def _parts_of(export_id: uuid.UUID) -> str:
    """An export's own part files: two exports never write each other's."""
    return f"{PARTS}/{export_id}"


def _part(export_id: uuid.UUID, name: str, page: int) -> str:
    return f"{_parts_of(export_id)}/{name}-{page:06d}"


def claim_destination(target: ExportTarget, export_id: uuid.UUID, location: str) -> None:
    """Mark the destination as this export's, then check that it holds nothing else: of two
    exports that start at once, neither writes over the other (both may be refused)."""
    others = target.other_entries(export_id)
    if not others:
        target.write(f"{_parts_of(export_id)}/{CLAIM_FILE}", b"")
        others = target.other_entries(export_id)
        if not others:
            return
        target.remove_parts(export_id)
    raise permanent(not_empty(location, others), EXPORT_DESTINATION_NOT_EMPTY)


def not_empty(location: str, others: list[str]) -> str:
    """Why a destination that holds `others` is refused."""
    shown = ", ".join(others) + (", ..." if len(others) == SHOWN_ENTRIES else "")
    return (
        f"--out {location} already exists and is not an empty directory or prefix (it holds {shown}): "
        "export to a new or empty one"
    )


# --- the activities --------------------------------------------------------------------------


class ExportActivities:
    def __init__(self, sessions: async_sessionmaker, storage: Storage, page_size: int) -> None:
        self._sessions = sessions
        self._storage = storage
        self._page_size = page_size

    @activity.defn(name="plan_export")
    @classify_data_errors
    async def plan_export(self, request: ExportInput) -> ExportPlan:
        """Claim the destination (here, where the worker writes it), then size the splits."""
        target = export_target(request.location, self._storage)
        await asyncio.to_thread(claim_destination, target, request.export_id, request.location)
        conditions = selection_conditions(request.selection)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(Conversation).where(*conditions))
        return ExportPlan(total=total, split_sizes=split_sizes(total, request.selection.splits))

    @activity.defn(name="write_export_page")
    @classify_data_errors
    async def write_export_page(self, request: ExportPageInput) -> ExportPage:
        """One page in the export's order: a part file per split and a part of the manifest."""
        selection = request.export.selection
        key = order_key(selection.seed)
        query = (
            select(
                Conversation.conversation_id,
                Conversation.batch_job_id,
                Conversation.final_storage_path,
                Conversation.quality_score,
                Conversation.tier,
                Conversation.template_id,
                Conversation.generation_metadata["model"].astext.label("model"),
                Conversation.provider,
                Conversation.provider_host,
                Conversation.near_duplicate,
                Conversation.judge_score,
                Conversation.judge_scores,
                Conversation.judge_rubric,
                Conversation.judge_rubric_version,
                Conversation.judge_model,
                Persona.name.label("persona"),
                EmotionalArc.name.label("emotional_arc"),
                TrainingTopic.name.label("training_topic"),
                key.label("order_key"),
            )
            .join(Persona, Persona.id == Conversation.persona_id)
            .join(EmotionalArc, EmotionalArc.id == Conversation.emotional_arc_id)
            .join(TrainingTopic, TrainingTopic.id == Conversation.training_topic_id)
            .where(*selection_conditions(selection))
            .order_by(key, Conversation.conversation_id)
            .limit(self._page_size)
        )
        if request.after is not None:
            query = query.where(
                tuple_(key, Conversation.conversation_id) > tuple_(request.after.order_key, request.after.conversation_id)
            )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        if not rows:
            return ExportPage(count=0, last=None)
        if not selection.allow_stand_in:
            # The check before the export started saw none; one may have been made since.
            placeholder = next((row for row in rows if row.provider != ClaudeProvider.ANTHROPIC), None)
            if placeholder is not None:
                raise permanent(
                    f"conversation {placeholder.conversation_id} was not written by Claude's API (provider: "
                    f"{placeholder.provider or UNKNOWN_PROVIDER}): its text is placeholder; export with --allow-stand-in",
                    EXPORT_STAND_IN_REFUSED,
                )
        documents = await self._final_documents([row.final_storage_path for row in rows])
        split_lines: dict[str, list[bytes]] = {share.name: [] for share in selection.splits}
        manifest_lines: list[bytes] = []
        for offset, (row, document) in enumerate(zip(rows, documents, strict=True)):
            position = request.first_position + offset
            split = split_at(position, request.plan.split_sizes)
            metadata = {
                "conversation_id": str(row.conversation_id),
                "job_id": str(row.batch_job_id),
                "persona": row.persona,
                "emotional_arc": row.emotional_arc,
                "training_topic": row.training_topic,
                "tier": row.tier,
                "template_id": str(row.template_id),
                "model": row.model,
                "provider": row.provider or UNKNOWN_PROVIDER,
                "provider_host": row.provider_host,
                "quality_score": row.quality_score,
                "near_duplicate": row.near_duplicate,
                **judge_metadata(row),
            }
            line = record_line(
                training_record(selection.format, training_messages(document["turns"], selection.system_prompt), metadata)
            )
            split_lines[split].append(line)
            entry = {
                "conversation_id": str(row.conversation_id), "split": split, "provider": row.provider or UNKNOWN_PROVIDER,
                "sha256": hashlib.sha256(line).hexdigest(),
            }
            # Entries are joined across pages into one JSON list: all but the very first start with a comma.
            manifest_lines.append((b",\n" if position else b"") + json.dumps(entry).encode())
        target = export_target(request.export.location, self._storage)
        for split, lines in split_lines.items():
            await asyncio.to_thread(target.write, _part(request.export.export_id, split, request.page), b"".join(lines))
        await asyncio.to_thread(
            target.write, _part(request.export.export_id, "manifest", request.page), b"".join(manifest_lines)
        )
        last = rows[-1]
        activity.logger.info("export %s: page %d, %d conversations", request.export.export_id, request.page, len(rows))
        written_by = Counter((row.provider or UNKNOWN_PROVIDER, row.provider_host) for row in rows)
        return ExportPage(
            count=len(rows),
            last=ExportCursor(order_key=last.order_key, conversation_id=last.conversation_id),
            sources=add_provider_counts(
                [ProviderCount(provider=provider, api_host=host, conversations=n) for (provider, host), n in written_by.items()]
            ),
        )

    async def _final_documents(self, keys: list[str]) -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(DOWNLOADS_IN_FLIGHT)

        async def fetch(key: str) -> dict[str, Any]:
            async with limit:
                body = await self._storage.get_bytes_or_none(self._storage.conversation_bucket, key)
            if body is None:
                raise permanent(f"the final file {key} is missing: reject that conversation or restore the file", EXPORT_FILE_MISSING)
            return json.loads(body)

        return await asyncio.gather(*(fetch(key) for key in keys))

    @activity.defn(name="finish_export")
    @classify_data_errors
    async def finish_export(self, request: ExportFinishInput) -> ExportResult:
        """Join the parts into the data files and the manifest, write the card, record the export."""
        export, selection = request.export, request.export.selection
        counts = await self._counts(selection)
        # Who wrote what the pages wrote, as they counted it (a conversation un-approved since
        # is in the data, so it is in the count).
        provenance = Provenance(request.sources) if request.sources is not None else await self._provenance(selection)
        target = export_target(export.location, self._storage)
        files = await asyncio.to_thread(self._assemble, target, request, counts, provenance)
        splits = {share.name: files[data_file(share.name)]["records"] for share in selection.splits}
        written = sum(splits.values())
        async with self._sessions.begin() as session:
            await session.execute(
                update(Export)
                .where(Export.id == export.export_id)
                .values(
                    status=ExportStatus.COMPLETED.value,
                    conversation_count=written,
                    split_counts=splits,
                    completed_at=func.now(),
                )
            )
        return ExportResult(
            export_id=export.export_id, location=export.location, count=written, splits=splits, files=list(files),
            placeholder=provenance.placeholder,
        )

    def _assemble(
        self, target: ExportTarget, request: ExportFinishInput, counts: dict[str, dict[str, int]], provenance: Provenance
    ) -> dict[str, dict[str, Any]]:
        """The data files, the manifest and the card; returns the files' records, sizes and hashes."""
        selection, export_id = request.export.selection, request.export.export_id
        files: dict[str, dict[str, Any]] = {}
        for share in selection.splits:
            digest = _Digest()
            parts = (_part(export_id, share.name, page) for page in range(request.pages))
            target.write_stream(data_file(share.name), digest.through(_joined(target, parts)))
            files[data_file(share.name)] = {
                "split": share.name, "records": digest.lines, "bytes": digest.size, "sha256": digest.sha256.hexdigest(),
            }
        summary = {
            "format": selection.format.value,
            "seed": selection.seed,
            "selection": selection.model_dump(mode="json", exclude={"format", "seed", "system_prompt", "splits"}),
            "splits": {share.name: share.fraction for share in selection.splits},
            "system_prompt": selection.system_prompt,
            "provenance": provenance.as_json(),
            "files": files,
        }
        head = json.dumps(summary, ensure_ascii=False, indent=2)[:-2].encode() + b',\n  "conversations": [\n'
        manifest_parts = (_part(export_id, "manifest", page) for page in range(request.pages))
        target.write_stream(MANIFEST_FILE, _chain([head], _joined(target, manifest_parts), [b"\n  ]\n}\n"]))
        target.write(CARD_FILE, dataset_card(selection, counts, files, provenance).encode())
        target.remove_parts(export_id)
        return {**files, CARD_FILE: {}, MANIFEST_FILE: {}}

    async def _provenance(self, selection: ExportSelection) -> Provenance:
        """The selection's conversations by provider: for a finish whose pages did not count them."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Conversation.provider, Conversation.provider_host, func.count())
                .where(*selection_conditions(selection))
                .group_by(Conversation.provider, Conversation.provider_host)
                .order_by(Conversation.provider.nulls_last(), Conversation.provider_host)
            )
            return Provenance(
                [ProviderCount(provider=provider or UNKNOWN_PROVIDER, api_host=host, conversations=n) for provider, host, n in rows]
            )

    async def _counts(self, selection: ExportSelection) -> dict[str, dict[str, int]]:
        """Conversations by persona, arc, topic and tier, for the card."""
        conditions = selection_conditions(selection)
        dimensions = {
            "persona": (Persona.name, Persona.id == Conversation.persona_id, Persona),
            "emotional_arc": (EmotionalArc.name, EmotionalArc.id == Conversation.emotional_arc_id, EmotionalArc),
            "training_topic": (TrainingTopic.name, TrainingTopic.id == Conversation.training_topic_id, TrainingTopic),
        }
        counts: dict[str, dict[str, int]] = {}
        async with self._sessions() as session:
            for name, (column, on, table) in dimensions.items():
                rows = await session.execute(
                    select(column, func.count()).select_from(Conversation).join(table, on).where(*conditions).group_by(column).order_by(column)
                )
                counts[name] = dict(rows.all())
            tiers = await session.execute(
                select(Conversation.tier, func.count()).where(*conditions).group_by(Conversation.tier).order_by(Conversation.tier)
            )
            counts["tier"] = dict(tiers.all())
            rubric = func.concat(Conversation.judge_rubric, " v", Conversation.judge_rubric_version)
            judged = await session.execute(
                select(rubric, func.count())
                .where(*conditions, Conversation.judge_score.is_not(None))
                .group_by(rubric)
                .order_by(rubric)
            )
            counts["judge_rubric"] = dict(judged.all())
        return counts

    @activity.defn(name="fail_export")
    @classify_data_errors
    async def fail_export(self, failure: ExportFailure) -> None:
        """Record the failure; remove the export's part files, so that it can be run again to the same place."""
        if failure.location is not None:
            await asyncio.to_thread(export_target(failure.location, self._storage).remove_parts, failure.export_id)
        async with self._sessions.begin() as session:
            await session.execute(
                update(Export)
                .where(Export.id == failure.export_id, Export.status == ExportStatus.RUNNING.value)
                .values(status=ExportStatus.FAILED.value, error_message=failure.message, completed_at=func.now())
            )


def _joined(target: ExportTarget, paths: Iterable[str]) -> Iterator[bytes]:
    for path in paths:
        yield from target.read_chunks(path)


def _chain(*streams: Iterable[bytes]) -> Iterator[bytes]:
    for stream in streams:
        yield from stream


_PROVIDER_NAMES = {
    ClaudeProvider.ANTHROPIC.value: "Claude (Anthropic API)",
    ClaudeProvider.OFFLINE_STANDIN.value: "the offline Claude stand-in: placeholder text",
    UNKNOWN_PROVIDER: "unrecorded (written before providers were recorded)",
}


def placeholder_warning(provenance: Provenance, total: int) -> str:
    return (
        f"PLACEHOLDER TEXT, NOT TRAINING DATA: {provenance.placeholder} of these {total} conversations were written "
        "by the offline Claude stand-in (or by an unrecorded provider), not by Claude; do not train a model on them."
    )


def dataset_card(
    selection: ExportSelection, counts: dict[str, dict[str, int]], files: dict[str, dict[str, Any]], provenance: Provenance
) -> str:
    """README.md for the Hugging Face Hub and `load_dataset(DIR)`: YAML front matter with
    `configs` mapping the files to their splits, then what is inside, who wrote it and how it was
    chosen. With any conversation not written by Claude's API, the first line of the card's text
    (and a comment opening the front matter, which the Hub needs first) says the text is placeholder."""
    total = sum(info["records"] for info in files.values())
    placeholder = placeholder_warning(provenance, total) if provenance.placeholder else None
    front_matter = {
        "license": "other",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(total)],
        "tags": ["conversational", "sft", "synthetic", *(["placeholder"] if placeholder else [])],
        "pretty_name": "Bright Run placeholder conversations (not training data)" if placeholder
        else "Bright Run training conversations",
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": info["split"], "path": path} for path, info in files.items()],
            }
        ],
    }
    turns_key = "messages" if selection.format == ExportFormat.MESSAGES else "conversations"
    if not placeholder:
        written_by = "generated with Claude"
    elif provenance.placeholder == total:
        written_by = "of placeholder text (none written by Claude)"
    else:
        written_by = "partly of placeholder text (see Provenance)"
    lines = [
        "---",
        *([f"# {placeholder}"] if placeholder else []),
        yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        *([f"**{placeholder}**", ""] if placeholder else []),
        f"# {front_matter['pretty_name']}",
        "",
        (f"{total} synthetic conversations {written_by} for fine-tuning a financial-wellness assistant, "
        f"in the `{selection.format.value}` format: each line of `data/{{split}}.jsonl` has `{turns_key}` "
        "(the system prompt first, then user and assistant turns alternating, ending with the assistant) "
        "and `metadata` (conversation and job ids, persona, arc, topic, tier, template, model, provider, quality score)."),
        "",
        "## Provenance",
        "",
        "| written by | API host | conversations |",
        "|---|---|---|",
        *(f"| {_PROVIDER_NAMES.get(s.provider, s.provider)} | {s.api_host or '-'} | {s.conversations} |"
          for s in provenance.sources),
        "",
        "## Splits",
        "",
        "| split | file | conversations | sha256 |",
        "|---|---|---|---|",
        *(f"| {info['split']} | `{path}` | {info['records']} | `{info['sha256']}` |" for path, info in files.items()),
    ]
    for dimension in ("persona", "emotional_arc", "training_topic", "tier"):
        lines += ["", f"## By {dimension.replace('_', ' ')}", "", f"| {dimension} | conversations |", "|---|---|"]
        lines += [f"| {name} | {count} |" for name, count in counts[dimension].items()]
    judged = counts.get("judge_rubric") or {}
    if judged:
        lines += [
            "", "## Judge", "",
            ("Claude scored these conversations against a rubric (docs/judge.md): each record's `metadata.judge` has "
             "the overall score (1-5), each criterion's score, the rubric and its version, and the judge model."),
            "", "| rubric | conversations judged |", "|---|---|",
            *(f"| {label} | {count} |" for label, count in judged.items()),
            *([f"| not judged | {total - sum(judged.values())} |"] if total > sum(judged.values()) else []),
        ]
    jobs = ", ".join(str(job) for job in selection.job_ids) or "all"
    lines += [
        "",
        "## Selection",
        "",
        f"- review status: {selection.review_status.value if selection.review_status else 'any'}",
        f"- minimum quality: {selection.min_quality if selection.min_quality is not None else 'none'}",
        *([f"- minimum judge score: {selection.min_judge_score}"] if selection.min_judge_score is not None else []),
        f"- jobs: {jobs}",
        f"- owner: {selection.user or 'every user'}",
        f"- split seed: {selection.seed}",
        "",
        "`manifest.json` lists every conversation id with its split, its provider and the SHA-256 of its line.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'dataset = load_dataset("path/to/this/directory")  # the splits come from `configs` above',
        "```",
        "",
    ]
    return "\n".join(lines)
