"""Enrichment: make each stored conversation training-ready and searchable.

Per conversation: turn and (estimated) token counts per role, the quality score's parts, where it
came from (persona, arc, topic, tier, template, model), a content hash, and a near-duplicate flag
against the same user's earlier conversations (MinHash + LSH from datasketch). Every failing check
is kept with its reason. The result goes on the row and into `{conversation_id}_enriched.json`
beside the final file.

Idempotent: only rows with `enriched_at IS NULL` are picked and the update is guarded by it, and
the pages of one user run one at a time (an advisory lock), so a retried or concurrent attempt
enriches nothing twice and every conversation is compared with all that were enriched before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity

from activities.conversations import GOOD_TURN_COUNT, GOOD_WORDS_PER_TURN
from activities.data_errors import classify_data_errors
from activities.errors import JOB_NOT_FOUND, permanent
from brightrun.storage import Storage, enriched_conversation_key
from models.messages import EnrichedPage, EnrichPageInput
from models.tables import BatchJob, Conversation, EmotionalArc, Persona, PromptTemplate, TrainingTopic

if TYPE_CHECKING:
    # datasketch imports scipy (0.4 s): imported where a signature is made, so that a process that
    # only names these activities (the job's workflow module, the command line) does not pay for it.
    from datasketch import MinHash

MINHASH_PERMUTATIONS = 128
MINHASH_SEED = 1
# Stored signatures must be read back with the scheme that made them (datasketch 2's default).
MINHASH_SCHEME = "affine32"
SHINGLE_WORDS = 5
CHARACTERS_PER_TOKEN = 4  # a rough, tokenizer-free estimate; documented as such

# Why each quality part can fall short (activities/conversations.py scores them).
QUALITY_REASONS = {
    "turns": f"fewer than {GOOD_TURN_COUNT} turns",
    "length": f"mean turn length outside {GOOD_WORDS_PER_TURN[0]}-{GOOD_WORDS_PER_TURN[1]} words",
    "persona": "the persona's first name never appears",
    "topic": "not every key word of the training topic appears",
}
_WORD = re.compile(r"\w+")


def estimated_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARACTERS_PER_TOKEN)


def turn_counts(turns: list[dict[str, str]]) -> dict[str, int]:
    counts = {"user_turns": 0, "assistant_turns": 0, "user_tokens": 0, "assistant_tokens": 0}
    for turn in turns:
        counts[f"{turn['role']}_turns"] += 1
        counts[f"{turn['role']}_tokens"] += estimated_tokens(turn["content"])
    return counts


def content_hash(turns: list[dict[str, str]]) -> str:
    """SHA-256 of the turns alone (roles and words), so a re-generated identical dialogue matches."""
    canonical = json.dumps([[turn["role"], turn["content"]] for turn in turns], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def _minhash_permutations() -> Any:
    """The seed's permutations, drawn once: a MinHash draws them anew otherwise, and every page
    builds one for each of the user's enriched conversations."""
    from datasketch import MinHash

    return MinHash(num_perm=MINHASH_PERMUTATIONS, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations


def signature(turns: list[dict[str, str]]) -> MinHash:
    """MinHash of the conversation's word 5-grams (case-folded), across turn boundaries."""
    from datasketch import MinHash

    words = _WORD.findall(" ".join(turn["content"] for turn in turns).lower())
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    minhash = MinHash(
        num_perm=MINHASH_PERMUTATIONS, seed=MINHASH_SEED, scheme=MINHASH_SCHEME, permutations=_minhash_permutations()
    )
    minhash.update_batch([shingle.encode() for shingle in shingles])
    return minhash


def signature_bytes(minhash: MinHash) -> bytes:
    return minhash.hashvalues.astype("<u4").tobytes()


def signature_from_bytes(data: bytes) -> MinHash:
    import numpy as np
    from datasketch import MinHash

    return MinHash(
        seed=MINHASH_SEED,
        scheme=MINHASH_SCHEME,
        hashvalues=np.frombuffer(data, dtype="<u4"),
        permutations=_minhash_permutations(),
    )


def quality_checks(parts: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {"check": f"quality.{name}", "score": value, "reason": QUALITY_REASONS.get(name, "scored under 1")}
        for name, value in parts.items()
        if value < 1
    ]


@dataclass
class _Pending:
    """One conversation to enrich, with what the row and the catalog say about it."""

    row: Conversation
    provenance: dict[str, Any]
    document: dict[str, Any] | None  # None: the final file could not be read
    problem: str | None = None


@dataclass
class _Known:
    conversation_id: str
    content_hash: str
    minhash: MinHash


class DuplicateIndex:
    """The user's enriched conversations in an LSH index: candidates by LSH, then the estimated
    Jaccard similarity decides. The earliest-enriched of two look-alikes stays unflagged."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self._threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=MINHASH_PERMUTATIONS)
        self._known: dict[str, _Known] = {}

    def add(self, known: _Known) -> None:
        if known.conversation_id not in self._known:
            self._lsh.insert(known.conversation_id, known.minhash)
            self._known[known.conversation_id] = known

    def closest(self, minhash: MinHash, digest: str) -> tuple[str, float] | None:
        best: tuple[str, float] | None = None
        for key in sorted(self._lsh.query(minhash)):
            other = self._known[key]
            similarity = 1.0 if other.content_hash == digest else float(minhash.jaccard(other.minhash))
            if similarity >= self._threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best


def enrichment_of(pending: _Pending, index: DuplicateIndex, enriched_at: datetime) -> dict[str, Any]:
    """The row's new enrichment columns (and the enriched JSON's content, with a few more keys)."""
    row = pending.row
    if pending.document is None:
        return {
            "provenance": pending.provenance,
            "failed_checks": [{"check": "final_file", "reason": pending.problem}],
            "enriched_at": enriched_at,
        }
    turns = pending.document["turns"]
    parts = pending.document.get("quality") or {}
    digest = content_hash(turns)
    minhash = signature(turns)
    match = index.closest(minhash, digest)
    checks = quality_checks(parts)
    if match:
        other, similarity = match
        check = "duplicate" if similarity == 1.0 else "near_duplicate"
        checks.append({"check": check, "score": round(similarity, 3), "reason": f"{similarity:.0%} similar to conversation {other}"})
    index.add(_Known(str(row.conversation_id), digest, minhash))
    return {
        **turn_counts(turns),
        "quality_parts": parts,
        "provenance": pending.provenance,
        "content_hash": digest,
        "minhash": signature_bytes(minhash),
        "near_duplicate": match is not None,
        "near_duplicate_of": uuid.UUID(match[0]) if match else None,
        "failed_checks": checks,
        "enriched_at": enriched_at,
    }


def enriched_document(row: Conversation, job_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
    document = {
        "conversation_id": str(row.conversation_id),
        "job_id": str(job_id),
        "user_id": row.created_by,
        "title": row.title,
        "quality_score": row.quality_score,
        **{key: value for key, value in values.items() if key != "minhash"},
    }
    return json.loads(json.dumps(document, default=str))


_LOCK_USER = text("SELECT pg_advisory_xact_lock(hashtext('enrich:' || :user))")


class EnrichmentActivities:
    def __init__(self, sessions: async_sessionmaker, storage: Storage, page_size: int, near_duplicate_threshold: float) -> None:
        self._sessions = sessions
        self._storage = storage
        self._page_size = page_size
        self._threshold = near_duplicate_threshold

    @activity.defn(name="enrich_conversations")
    @classify_data_errors
    async def enrich_conversations(self, request: EnrichPageInput) -> EnrichedPage:
        """Enrich one page of the job's conversations that are not enriched yet."""
        async with self._sessions.begin() as session:
            user = await session.scalar(select(BatchJob.created_by).where(BatchJob.id == request.job_id))
            if user is None:
                raise permanent(f"batch job {request.job_id} does not exist", JOB_NOT_FOUND)
            # One page of a user at a time: each compares with every conversation enriched before it.
            await session.execute(_LOCK_USER, {"user": user})
            rows = (
                await session.execute(
                    select(
                        Conversation,
                        Persona.name,
                        EmotionalArc.name,
                        EmotionalArc.arc_type,
                        TrainingTopic.name,
                        PromptTemplate.name,
                        PromptTemplate.version,
                    )
                    .join(Persona, Persona.id == Conversation.persona_id)
                    .join(EmotionalArc, EmotionalArc.id == Conversation.emotional_arc_id)
                    .join(TrainingTopic, TrainingTopic.id == Conversation.training_topic_id)
                    .join(PromptTemplate, PromptTemplate.id == Conversation.template_id)
                    .where(Conversation.batch_job_id == request.job_id, Conversation.enriched_at.is_(None))
                    .order_by(Conversation.created_at, Conversation.id)
                    .limit(self._page_size)
                )
            ).all()
            if not rows:
                return EnrichedPage(enriched=0, more=False)
            pending = await asyncio.gather(*(self._pending(*row) for row in rows))
            known = (
                await session.execute(
                    select(Conversation.conversation_id, Conversation.content_hash, Conversation.minhash).where(
                        Conversation.created_by == user, Conversation.minhash.is_not(None)
                    )
                )
            ).all()
            enriched_at = datetime.now(UTC)
            values = await asyncio.to_thread(self._compare, pending, known, enriched_at)
            # The files first: a crash before the commit leaves rows to redo, never a row without its file.
            await asyncio.gather(
                *(
                    self._storage.put_json(
                        self._storage.conversation_bucket,
                        enriched_conversation_key(item.row.created_by, item.row.conversation_id),
                        enriched_document(item.row, request.job_id, row_values),
                    )
                    for item, row_values in zip(pending, values, strict=True)
                )
            )
            for item, row_values in zip(pending, values, strict=True):
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == item.row.id, Conversation.enriched_at.is_(None))
                    .values(**row_values, updated_at=func.now())
                )
            more = len(rows) == self._page_size
        activity.logger.info("enriched %d conversations of job %s", len(rows), request.job_id)
        return EnrichedPage(enriched=len(rows), more=more)

    def _compare(self, pending: list[_Pending], known: list[Any], enriched_at: datetime) -> list[dict[str, Any]]:
        """CPU work (signatures, LSH), run in a thread so the worker's event loop keeps heartbeating."""
        index = DuplicateIndex(self._threshold)
        for conversation_id, digest, minhash in known:
            index.add(_Known(str(conversation_id), digest, signature_from_bytes(minhash)))
        return [enrichment_of(item, index, enriched_at) for item in pending]

    async def _pending(
        self, row: Conversation, persona: str, arc: str, arc_type: str, topic: str, template: str, version: int
    ) -> _Pending:
        provenance = {
            "persona": {"id": str(row.persona_id), "name": persona},
            "emotional_arc": {"id": str(row.emotional_arc_id), "name": arc, "arc_type": arc_type},
            "training_topic": {"id": str(row.training_topic_id), "name": topic},
            "template": {"id": str(row.template_id), "name": template, "version": version},
            "tier": row.tier,
            "model": row.generation_metadata.get("model"),
            "job_id": str(row.batch_job_id),
        }
        body = await self._storage.get_bytes_or_none(self._storage.conversation_bucket, row.final_storage_path)
        if body is None:
            return _Pending(row, provenance, None, f"final file {row.final_storage_path} is missing")
        try:
            return _Pending(row, provenance, json.loads(body))
        except json.JSONDecodeError as exc:
            return _Pending(row, provenance, None, f"final file {row.final_storage_path} is not JSON: {exc}")
