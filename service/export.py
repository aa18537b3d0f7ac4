"""Starting an export of a training set and waiting for it: what `starter.py export` does."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError

from activities.errors import EXPORT_DESTINATION_NOT_EMPTY
from activities.export import export_target, not_empty, not_written_by_claude, parse_s3_location, selection_conditions
from brightrun.settings import Settings
from brightrun.storage import Storage
from models.enums import ExportFormat, ExportStatus, ReviewStatus
from models.judge import MAX_SCORE, MIN_SCORE
from models.messages import ExportInput, ExportResult, ExportSelection, SplitShare
from models.tables import Conversation, Export
from service.access import shared_job_ids
from service.batches import BatchInputError
from service.review import Owner, owned_job
from workflows.export import ExportWorkflow, export_workflow_id


class ExportFailedError(RuntimeError):
    """The export workflow ended failed; the message is its reason."""


_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_splits(text: str) -> list[SplitShare]:
    """`train=0.9,validation=0.1`: named shares that add up to 1."""
    shares = []
    for part in text.split(","):
        name, equals, value = part.strip().partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not equals or not _SPLIT_NAME.match(name) or not 0 < fraction <= 1:
            raise BatchInputError(f"--split {text!r}: expected name=fraction pairs like train=0.9,validation=0.1")
        shares.append(SplitShare(name=name, fraction=fraction))
    if len({share.name for share in shares}) != len(shares):
        raise BatchInputError(f"--split {text!r} names a split twice")
    if abs(sum(share.fraction for share in shares) - 1) > 1e-6:
        raise BatchInputError(f"--split {text!r}: the fractions add up to {sum(s.fraction for s in shares):g}, not 1")
    return shares


def resolve_location(out: str) -> str:
    """An s3://bucket/prefix as given, or a local directory made absolute (the worker writes it,
    so it must be on the worker's machine, and the export's first step checks it is empty there)."""
    s3 = parse_s3_location(out)
    if s3 is not None:
        if not s3[0]:
            raise BatchInputError(f"--out {out!r} names no bucket: use s3://bucket/prefix")
        return out.rstrip("/")
    return str(Path(out).expanduser().resolve())


@dataclass(frozen=True)
class ExportRequest:
    owner: Owner
    out: str
    jobs: tuple[str, ...] = ()
    review_status: ReviewStatus | None = ReviewStatus.APPROVED
    min_quality: float | None = None
    min_judge_score: float | None = None
    format: ExportFormat = ExportFormat.MESSAGES
    split: str = "train=1"
    seed: int = 0
    # Export conversations the offline stand-in wrote too (the card then says they are placeholder).
    allow_stand_in: bool = False


async def export(sessions: async_sessionmaker, client: Client, settings: Settings, request: ExportRequest) -> ExportResult:
    """Validate, record the export, run its workflow to the end, and return what it wrote."""
    export_id = await start_export(sessions, client, settings, request)
    try:
        return await client.get_workflow_handle(export_workflow_id(export_id), result_type=ExportResult).result()
    except WorkflowFailureError as exc:
        # The workflow recorded the failure on the row; the person gets its reason in one line
        # (its message: str() would put the error type in front).
        cause = exc.cause
        refused = _destination_refusal(cause)
        if refused is not None:
            raise BatchInputError(refused) from None
        raise ExportFailedError(cause.message if isinstance(cause, FailureError) else str(cause)) from None


async def start_export(
    sessions: async_sessionmaker, client: Client, settings: Settings, request: ExportRequest
) -> uuid.UUID:
    """Validate, record the export and start its workflow; its id (the workspace follows its progress)."""
    if request.min_quality is not None and not 0 <= request.min_quality <= 1:
        raise BatchInputError(f"--min-quality must be between 0 and 1, got {request.min_quality}")
    if request.min_judge_score is not None and not MIN_SCORE <= request.min_judge_score <= MAX_SCORE:
        raise BatchInputError(f"--min-judge-score must be between {MIN_SCORE} and {MAX_SCORE}, got {request.min_judge_score}")
    splits = parse_splits(request.split)
    location = resolve_location(request.out)
    job_ids = [await owned_job(sessions, request.owner, job) for job in dict.fromkeys(request.jobs)]
    selection = ExportSelection(
        user=None if request.owner.admin else request.owner.user,
        shared_job_ids=await shared_job_ids(sessions, request.owner),
        job_ids=job_ids,
        review_status=request.review_status,
        min_quality=request.min_quality,
        min_judge_score=request.min_judge_score,
        format=request.format,
        splits=splits,
        seed=request.seed,
        system_prompt=settings.export_system_prompt,
        allow_stand_in=request.allow_stand_in,
    )
    async with sessions.begin() as session:
        matching = await session.scalar(select(func.count()).select_from(Conversation).where(*selection_conditions(selection)))
        if not matching:
            status = request.review_status.value if request.review_status else "any"
            raise BatchInputError(f"nothing to export: no conversation of yours is {status} with this selection")
        placeholder = await session.scalar(
            select(func.count()).select_from(Conversation).where(*selection_conditions(selection), not_written_by_claude())
        )
        if placeholder and not request.allow_stand_in:
            raise BatchInputError(
                f"{placeholder} of the {matching} conversations selected were written by the offline Claude stand-in "
                "(or before providers were recorded): their text is placeholder, not training data; "
                "pass --allow-stand-in to export them marked as placeholder"
            )
    storage = Storage(settings)
    await _check_buckets(storage, location)
    await asyncio.to_thread(_check_destination, storage, location)
    async with sessions.begin() as session:
        export_id = await session.scalar(
            insert(Export)
            .values(
                created_by=request.owner.user,
                status=ExportStatus.RUNNING.value,
                format=request.format.value,
                selection=selection.model_dump(mode="json"),
                location=location,
            )
            .returning(Export.id)
        )
    try:
        await client.start_workflow(
            ExportWorkflow.run,
            ExportInput(export_id=export_id, selection=selection, location=location),
            id=export_workflow_id(export_id),
            task_queue=settings.task_queue,
        )
    except RPCError:
        async with sessions.begin() as session:
            await session.execute(
                update(Export).where(Export.id == export_id).values(
                    status=ExportStatus.FAILED.value, error_message="the export workflow could not start"
                )
            )
        raise
    return export_id


def _destination_refusal(failure: BaseException | None) -> str | None:
    """The message of a refused --out, found down the failure's causes (the workflow's failure,
    its activity's, the activity's error): bad input, like every other check of --out."""
    while failure is not None:
        if isinstance(failure, ApplicationError) and failure.type == EXPORT_DESTINATION_NOT_EMPTY:
            return failure.message
        failure = failure.__cause__ or getattr(failure, "cause", None)
    return None


def _check_destination(storage: Storage, location: str) -> None:
    """A destination that holds files is refused here, before an export is recorded (a typo
    costs no failed row). The export's first step checks again where the worker writes: that
    check decides (the worker may see another disk, and another export may start meanwhile)."""
    others = export_target(location, storage).other_entries(uuid.uuid4())
    if others:
        raise BatchInputError(not_empty(location, others))


async def _check_buckets(storage: Storage, location: str) -> None:
    """The export's steps retry S3 without a cap, so an export started while S3 is down would wait
    without a word: the bucket it reads and the one it writes must answer first."""
    await storage.check_bucket(storage.conversation_bucket)
    destination = parse_s3_location(location)
    if destination is None:
        return
    try:
        await storage.check_bucket(destination[0])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            raise BatchInputError(f"--out {location}: S3 has no bucket {destination[0]!r}") from None
        raise


def full_paths(result: ExportResult) -> list[str]:
    return [f"{result.location}/{path}" for path in result.files]
