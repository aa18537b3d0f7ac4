"""The Bright Run command line: launch batches, watch them, inspect the catalog.

    python starter.py launch --persona "David Chen" --arc "Couple Conflict -> Alignment" \\
        --topic "Essential Estate Planning" --tier template
    python starter.py status JOB [--json]
    python starter.py watch JOB
    python starter.py pause|resume|cancel|retry JOB [--json]
    python starter.py jobs [--status S] [--user U] [--json]
    python starter.py catalog [--json]
    python starter.py review list|show|approve|reject ...
    python starter.py export [--job JOB]... [--status approved] [--min-quality Q] [--format messages|sharegpt] \\
        [--split train=0.9,validation=0.1] [--seed N] [--user U] [--allow-stand-in] --out DIR|s3://bucket/prefix [--json]
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from brightrun.settings import Settings, SettingsError, get_settings
from brightrun.storage import Storage
from brightrun.temporal_client import connect, connect_options, run_and_exit, temporal_address
from models.enums import DeliveryMode, ErrorPolicy, ExportFormat, JobStatus, ReviewStatus, Tier


def _lazy(name: str) -> ModuleType:
    """The module `name`, imported when a command first uses it: `--help` and each command load
    only what they need (the service imports SQLAlchemy, Temporal and the workflows)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from temporalio.client import Client

    from models.messages import ExportResult
    from service import batches
    from service import catalog as catalogs
    from service import export as exports
    from service import judge as judges
    from service import review as reviews
    from workflows import export as export_workflow
else:
    batches, catalogs, exports, judges, reviews = (
        _lazy(f"service.{name}") for name in ("batches", "catalog", "export", "judge", "review")
    )
    export_workflow = _lazy("workflows.export")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Launch and control Bright Run batch jobs.")
console = Console()
T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    sessions: async_sessionmaker
    client: Client | None

    @property
    def temporal(self) -> Client:
        """The Temporal client, for a command run with_temporal."""
        if self.client is None:
            raise ValueError("this command was run without a Temporal client")
        return self.client


@asynccontextmanager
async def _context(with_temporal: bool) -> AsyncIterator[Context]:
    from brightrun.db import create_engine, create_sessionmaker

    settings = get_settings()
    engine = create_engine(settings)
    try:
        client = await connect(settings) if with_temporal else None
        yield Context(settings, create_sessionmaker(engine), client)
    finally:
        await engine.dispose()


def _run(action: Callable[[Context], Awaitable[T]], with_temporal: bool = False) -> T:
    """Run one command. Every failure ends in one clear line and a non-zero exit: 2 for bad
    input or settings, 3 when a service cannot be reached or refuses, 4 when pause, resume or cancel was sent
    but the job did not show it in time, 1 for anything else."""

    import asyncpg
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy.exc import SQLAlchemyError
    from temporalio.service import RPCError

    async def main() -> T:
        async with _context(with_temporal) as ctx:
            return await action(ctx)

    try:
        return asyncio.run(main())
    except (batches.BatchInputError, judges.JudgeInputError, SettingsError) as exc:
        _fail(2, str(exc))
    except batches.ControlNotConfirmed as exc:
        _fail(4, str(exc))
    except (SQLAlchemyError, asyncpg.PostgresError) as exc:
        _fail(3, f"PostgreSQL at {_database_address()}: {_first_line(getattr(exc, 'orig', None) or exc)}. {_STACK_HINT}")
    except RPCError as exc:
        _fail(3, f"Temporal at {temporal_address(get_settings())}: {_first_line(exc)}. {_STACK_HINT}")
    except (BotoCoreError, ClientError) as exc:
        _fail(3, f"S3 storage: {_first_line(exc)}. {_STACK_HINT}")
    except exports.ExportFailedError as exc:
        _fail(1, _first_line(exc))  # the workflow's reason names the export already
    except RuntimeError as exc:
        # A re-raise here would skip the handlers below: every other RuntimeError ends here too.
        if "Failed client connect" in str(exc):
            _fail(3, f"Temporal at {temporal_address(get_settings())}: {_first_line(exc)}. {_STACK_HINT}")
        _fail(1, f"{exc.__class__.__name__}: {_first_line(exc)}")
    except (ConnectionError, OSError, TimeoutError) as exc:
        # asyncpg refuses with OSError, the Temporal client with RuntimeError("Failed client connect").
        _fail(3, f"cannot reach a service ({exc.__class__.__name__}: {_first_line(exc)}). {_STACK_HINT}")
    except Exception as exc:  # the last resort of a command line: one line, never a traceback
        _fail(1, f"{exc.__class__.__name__}: {_first_line(exc)}")


_STACK_HINT = "Is the stack up (`make up`, `make status`)?"


def _check_input(check: Callable[[], None]) -> None:
    """An option's value checked before any service is reached: bad input is exit 2 also with the stack down."""
    try:
        check()
    except batches.BatchInputError as exc:
        _fail(2, str(exc))


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def _database_address() -> str:
    from sqlalchemy import make_url

    url = make_url(get_settings().database_url)
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def launch(
    persona: Annotated[list[str], typer.Option("--persona", help="Persona id or name (repeatable).")],
    arc: Annotated[list[str], typer.Option("--arc", help="Emotional arc id or name (repeatable).")],
    topic: Annotated[list[str], typer.Option("--topic", help="Training topic id or name (repeatable).")],
    tier: Annotated[Tier, typer.Option("--tier", help="Tier of every item.")],
    template: Annotated[str | None, typer.Option("--template", help="Template UUID; omit or nil UUID to auto-select.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Items in flight at once (1-10000; default DEFAULT_CONCURRENCY; calls still go at CLAUDE_CALLS_PER_MINUTE).")] = None,
    on_error: Annotated[ErrorPolicy, typer.Option("--on-error", help="continue, or stop at the first failed item.")] = ErrorPolicy.CONTINUE,
    name: Annotated[str | None, typer.Option("--name", help="A name for the job.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="User id the files are stored under.")] = None,
    mode: Annotated[
        DeliveryMode,
        typer.Option("--mode", help="online: one Messages call per item; batch: Anthropic Message Batches, half the price."),
    ] = DeliveryMode.ONLINE,
    samples: Annotated[int, typer.Option("--samples", help="Conversations per combination, each its own item (1-1000).")] = 1,
    priority: Annotated[
        int | None, typer.Option("--priority", help="1 (first) to 5 (last) when jobs wait for workers; default 3.")
    ] = None,
    judge: Annotated[
        bool | None,
        typer.Option("--judge/--no-judge", help="Claude scores each conversation against a rubric (default: on when the catalog has one)."),
    ] = None,
    rubric: Annotated[str | None, typer.Option("--rubric", help="The rubric to judge with (its latest version).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create a batch job (personas x arcs x topics, x samples) and start its workflow."""

    async def action(ctx: Context) -> batches.LaunchedJob:
        request = batches.LaunchRequest(
            personas=persona,
            arcs=arc,
            topics=topic,
            tier=tier,
            template=template,
            concurrency=ctx.settings.default_concurrency if concurrency is None else concurrency,
            on_error=on_error,
            name=name,
            user=user or ctx.settings.default_user_id,
            mode=mode,
            samples=samples,
            priority=priority,
            judge=judge,
            rubric=rubric,
        )
        return await batches.launch(ctx.sessions, ctx.temporal, ctx.settings, request)

    job = _run(action, with_temporal=True)
    settings = get_settings()
    if as_json:
        _print_json({"job_id": str(job.job_id), "workflow_id": job.workflow_id, "total_items": job.total_items})
        return
    console.print(f"launched job [bold]{job.job_id}[/] with {job.total_items} items")
    console.print(f"workflow {job.workflow_id}: {settings.temporal_ui_url}/namespaces/{connect_options(settings)['namespace']}/workflows/{job.workflow_id}")
    console.print(f"follow it: .venv/bin/python starter.py watch {job.job_id}")


def _status_table(status: batches.JobStatusView) -> Table:
    table = Table(show_header=False, box=None)
    for key, value in status.as_json().items():
        if key == "waiting_on" and status.waiting_on:
            value = "\n".join(outage.summary for outage in status.waiting_on)
        if key == "templates_too_short_to_cache" and status.templates_too_short_to_cache:
            value = "\n".join(template.summary for template in status.templates_too_short_to_cache)
        if value is not None:
            table.add_row(key, str(value))
    return table


@app.command()
def status(
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a job's state, counters, ETA and token usage, and any outage its items wait for."""
    result = _run(lambda ctx: batches.job_status(ctx.sessions, job, ctx.client, ctx.settings.claude_model), with_temporal=True)
    _print_status(result, as_json)
    if result.database_unavailable:
        # The workflow's numbers were shown; the exit code still says a part is down.
        _fail(3, f"PostgreSQL at {_database_address()}: {result.database_unavailable}. Shown: the workflow's own numbers")


def _print_status(result: batches.JobStatusView, as_json: bool) -> None:
    if as_json:
        _print_json(result.as_json())
    else:
        console.print(_status_table(result))


def _control(action: str, job: str, as_json: bool, wait: float | None) -> None:
    if wait is not None:
        _check_input(lambda: batches.check_control_wait(wait))
    _print_status(
        _run(lambda ctx: batches.control_job(ctx.sessions, ctx.temporal, job, action, wait), with_temporal=True), as_json
    )


Wait = Annotated[
    float | None,
    typer.Option("--wait", help="Seconds to wait for the job to show it (default: 60; cancel: the halt's grace period + 30)."),
]


@app.command()
def pause(
    job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False, wait: Wait = None
) -> None:
    """Start no new items; items in flight finish. Waits until the job shows paused."""
    _control("pause", job, as_json, wait)


@app.command()
def resume(
    job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False, wait: Wait = None
) -> None:
    """Resume a paused job. Waits until it shows processing."""
    _control("resume", job, as_json, wait)


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False, wait: Wait = None
) -> None:
    """Cancel in-flight items, mark unstarted ones cancelled, end the job cancelled. Waits until it
    has; if it has not by then, says which items have not reported yet and exits 4."""
    _control("cancel", job, as_json, wait)


@app.command()
def retry(job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Re-run exactly the failed items of an ended job, with their original parameters."""
    _print_status(
        _run(lambda ctx: batches.retry_job(ctx.sessions, ctx.temporal, ctx.settings, job), with_temporal=True), as_json
    )


@app.command()
def watch(
    job: Annotated[str, typer.Argument(help="Job id.")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """A live progress bar until the job ends."""

    _check_input(lambda: batches.check_watch_interval(interval))

    async def action(ctx: Context) -> batches.JobStatusView:
        current = await batches.job_status(ctx.sessions, job, ctx.client)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(current.status.value, total=current.total, detail="")
            while True:
                eta = current.eta_seconds
                progress.update(
                    task,
                    description=current.status.value,
                    completed=current.completed + current.cancelled,
                    detail=f"ok {current.successful}  failed {current.failed}  cancelled {current.cancelled}"
                    f"  in flight {current.in_flight}  ${current.cost_usd:.4f}" + (f"  eta {eta:.0f}s" if eta else "")
                    + "".join(f"  waiting for {outage.part}" for outage in current.waiting_on or []),
                )
                if current.status.is_final:
                    return current
                await asyncio.sleep(interval)
                current = await batches.job_status(ctx.sessions, job, ctx.client)

    final = _run(action, with_temporal=True)
    console.print(f"job {final.job_id} ended [bold]{final.status.value}[/]" + (f": {final.error_message}" if final.error_message else ""))


@app.command()
def jobs(
    status: Annotated[JobStatus | None, typer.Option("--status", help="Only jobs in this state.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's jobs.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many jobs.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List jobs with their progress, newest first."""
    listed = _run(lambda ctx: batches.list_jobs(ctx.sessions, status, user, limit))
    if as_json:
        _print_json([job.model_dump(mode="json") for job in listed])
        return
    table = Table("job", "name", "status", "user", "tier", "done", "ok", "failed", "cancelled", "cost $", "created")
    for job in listed:
        table.add_row(
            str(job.job_id), job.name, job.status.value, job.user, job.tier.value,
            f"{job.completed + job.cancelled}/{job.total}", str(job.successful), str(job.failed), str(job.cancelled),
            f"{job.cost_usd:.4f}", job.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@app.command()
def catalog(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """List personas, emotional arcs, training topics and prompt templates with their ids."""
    result = _run(lambda ctx: catalogs.list_catalog(ctx.sessions))
    if as_json:
        _print_json(result)
        return
    for kind, rows in result.items():
        table = Table(title=kind.replace("_", " "), title_justify="left")
        for column in rows[0] if rows else ["id"]:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(v) if v is not None else "-" for v in row.values()))
        console.print(table)


# --- review -------------------------------------------------------------------------------

review_app = typer.Typer(no_args_is_help=True, help="Review generated conversations: list, show, approve, reject.")
app.add_typer(review_app, name="review")

UserOption = Annotated[str | None, typer.Option("--user", help="Act as this user (default DEFAULT_USER_ID).")]
AdminOption = Annotated[bool, typer.Option("--admin", help="Act on every user's conversations.")]
JobOption = Annotated[str | None, typer.Option("--job", help="Only this job's conversations.")]
MinQualityOption = Annotated[float | None, typer.Option("--min-quality", help="Only quality at or above this (0..1).")]
NearDuplicatesOption = Annotated[bool, typer.Option("--near-duplicates", help="Near-duplicates (or --below-quality ones).")]
BelowQualityOption = Annotated[float | None, typer.Option("--below-quality", help="Quality under this (or --near-duplicates).")]
MinJudgeScoreOption = Annotated[float | None, typer.Option("--min-judge-score", help="Judge's overall score at or above this (1-5).")]
MaxJudgeScoreOption = Annotated[float | None, typer.Option("--max-judge-score", help="Judge's overall score at or below this (1-5).")]
MinCriterionOption = Annotated[
    list[str] | None, typer.Option("--min-criterion", help="CRITERION=SCORE: that criterion at or above (repeatable).")
]
MaxCriterionOption = Annotated[
    list[str] | None, typer.Option("--max-criterion", help="CRITERION=SCORE: that criterion at or below (repeatable).")
]


def _judge_filter(
    min_score: float | None, max_score: float | None, min_criterion: list[str] | None, max_criterion: list[str] | None
) -> judges.JudgeFilter:
    try:
        return judges.JudgeFilter(
            min_score=min_score,
            max_score=max_score,
            criteria_min=judges.parse_criterion_bounds(min_criterion, "--min-criterion"),
            criteria_max=judges.parse_criterion_bounds(max_criterion, "--max-criterion"),
        )
    except judges.JudgeInputError as exc:
        _fail(2, str(exc))


def _owner(ctx: Context, user: str | None, admin: bool) -> reviews.Owner:
    return reviews.Owner.of(user or ctx.settings.default_user_id, admin)


@review_app.command("list")
def review_list(
    job: JobOption = None,
    status: Annotated[ReviewStatus | None, typer.Option("--status", help="Only this review status.")] = None,
    min_quality: MinQualityOption = None,
    near_duplicates: NearDuplicatesOption = False,
    below_quality: BelowQualityOption = None,
    min_judge_score: MinJudgeScoreOption = None,
    max_judge_score: MaxJudgeScoreOption = None,
    min_criterion: MinCriterionOption = None,
    max_criterion: MaxCriterionOption = None,
    sort: Annotated[
        str, typer.Option("--sort", help="created (oldest first), judge-score (worst first) or -judge-score (best first).")
    ] = "created",
    user: UserOption = None,
    admin: AdminOption = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Conversations with their review status, quality, judge's score, flags and storage keys, oldest first."""
    selection = reviews.Selection(
        job=job, status=status, min_quality=min_quality, near_duplicates=near_duplicates, below_quality=below_quality,
        judge=_judge_filter(min_judge_score, max_judge_score, min_criterion, max_criterion),
    )
    listed = _run(lambda ctx: reviews.list_conversations(ctx.sessions, _owner(ctx, user, admin), selection, limit, sort))
    if as_json:
        _print_json([row.model_dump(mode="json") for row in listed])
        return
    table = Table("conversation", "job", "status", "quality", "judge", "enriched", "flags", "persona", "topic", "final file")
    for row in listed:
        table.add_row(
            str(row.conversation_id), str(row.job_id)[:8], row.review_status.value,
            "-" if row.quality_score is None else f"{row.quality_score:.2f}",
            "-" if row.judge_score is None else f"{row.judge_score:.2f}", "yes" if row.enriched else "no",
            ", ".join(row.failed_checks) or "-", row.persona, row.training_topic, row.final_key,
        )
    console.print(table)


@review_app.command("show")
def review_show(
    conversation: Annotated[str, typer.Argument(help="Conversation id (the business key).")],
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """One conversation, readably: metadata, quality, checks, then every turn."""
    shown = _run(
        lambda ctx: reviews.show_conversation(ctx.sessions, Storage(ctx.settings), _owner(ctx, user, admin), conversation)
    )
    if as_json:
        _print_json(shown)
        return
    console.print(f"[bold]{shown['title']}[/]  ({shown['conversation_id']})")
    for key in ("review_status", "review_reason", "reviewed_by", "quality_score", "quality_parts", "persona",
                "emotional_arc", "training_topic", "tier", "model", "provider", "provider_host", "counts", "near_duplicate_of", "job_id", "final_key"):
        if shown.get(key) not in (None, {}, []):
            console.print(f"  {key}: {shown[key]}", highlight=False)
    for check in shown["failed_checks"]:
        console.print(f"  failed check {check['check']}: {check['reason']}", highlight=False)
    if shown["judge"]:
        verdict = shown["judge"]
        console.print(f"  judge: {verdict['score']:.2f} ({verdict['rubric']} v{verdict['rubric_version']}, {verdict['model']})", highlight=False)
        for key, criterion in verdict["criteria"].items():
            console.print(f"    {key} {criterion['score']}: {criterion['reason']}", highlight=False)
    for turn in shown["turns"]:
        console.print(f"\n[bold]{turn['role'].upper()}[/]: {turn['content']}", highlight=False)


def _review(action: ReviewStatus, selection: reviews.Selection, reason: str | None, user: str | None, admin: bool,
            as_json: bool) -> None:
    result = _run(lambda ctx: reviews.review(ctx.sessions, _owner(ctx, user, admin), action, selection, reason))
    if as_json:
        _print_json(result.model_dump(mode="json"))
        return
    verb = "approved" if action == ReviewStatus.APPROVED else "rejected"
    console.print(f"{verb} {result.changed} conversations ({result.unchanged} already were)")


ConversationsArgument = Annotated[list[str] | None, typer.Argument(help="Conversation ids; or select in bulk.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (required to reject named conversations).")]
AllPendingOption = Annotated[bool, typer.Option("--all-pending", help="Every conversation pending review.")]


@review_app.command("approve")
def review_approve(
    conversations: ConversationsArgument = None,
    job: JobOption = None,
    min_quality: MinQualityOption = None,
    min_judge_score: MinJudgeScoreOption = None,
    min_criterion: MinCriterionOption = None,
    all_pending: AllPendingOption = False,
    reason: ReasonOption = None,
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Approve named conversations, or in bulk the pending ones selected (e.g. --job JOB --min-quality 0.8,
    or --job JOB --min-judge-score 4.5)."""
    selection = reviews.Selection(
        tuple(conversations or ()), job=job, min_quality=min_quality, all_pending=all_pending,
        judge=_judge_filter(min_judge_score, None, min_criterion, None),
    )
    _review(ReviewStatus.APPROVED, selection, reason, user, admin, as_json)


@review_app.command("reject")
def review_reject(
    conversations: ConversationsArgument = None,
    job: JobOption = None,
    near_duplicates: NearDuplicatesOption = False,
    below_quality: BelowQualityOption = None,
    max_judge_score: MaxJudgeScoreOption = None,
    max_criterion: MaxCriterionOption = None,
    all_pending: AllPendingOption = False,
    reason: ReasonOption = None,
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Reject named conversations (--reason), or in bulk the pending ones selected: near-duplicates and
    low quality at once with --near-duplicates --below-quality Q; by the judge with --max-judge-score S."""
    selection = reviews.Selection(
        tuple(conversations or ()), job=job, near_duplicates=near_duplicates, below_quality=below_quality,
        all_pending=all_pending, judge=_judge_filter(None, max_judge_score, None, max_criterion),
    )
    _review(ReviewStatus.REJECTED, selection, reason, user, admin, as_json)


# --- judge --------------------------------------------------------------------------------

judge_app = typer.Typer(no_args_is_help=True, help="Claude as judge: calibrate against reviews, rerun with a rubric.")
app.add_typer(judge_app, name="judge")
RequiredJobOption = Annotated[str, typer.Option("--job", help="The job.")]


@judge_app.command("calibrate")
def judge_calibrate(
    job: RequiredJobOption,
    threshold: Annotated[
        float, typer.Option("--threshold", help="The judge approves from this overall score (1-5).")
    ] = 3.5,
    top: Annotated[int, typer.Option("--top", help="Show this many of the most disagreeing conversations.")] = 10,
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare the judge with the review decisions already made on a job: agreement, confusion
    counts, each criterion's mean for approved and rejected, the conversations they disagree on most."""

    async def action(ctx: Context) -> judges.Calibration:
        job_id = await reviews.owned_job(ctx.sessions, _owner(ctx, user, admin), job)
        return await judges.calibrate(ctx.sessions, job_id, threshold, top)

    result = _run(action)
    if as_json:
        _print_json(result.model_dump(mode="json"))
        return
    agreement = "-" if result.agreement is None else f"{result.agreement:.0%}"
    console.print(f"{result.decisions} reviewed and judged; agreement {agreement} (judge approves from {result.threshold})")
    confusion = Table("", "human approved", "human rejected")
    confusion.add_row("judge approves", str(result.both_approve), str(result.judge_approves_human_rejects))
    confusion.add_row("judge rejects", str(result.judge_rejects_human_approves), str(result.both_reject))
    console.print(confusion)
    criteria = Table("criterion", "mean approved", "mean rejected")
    for key, means in result.criteria.items():
        criteria.add_row(key, *("-" if means[side] is None else f"{means[side]:.2f}" for side in ("approved", "rejected")))
    console.print(criteria)
    for disagreement in result.disagreements:
        console.print(
            f"{disagreement.conversation_id}  human {disagreement.human.value}, judge {disagreement.judge_score:.2f}: "
            f"{disagreement.criterion} {disagreement.criterion_score}, {disagreement.criterion_reason}",
            highlight=False,
        )


@judge_app.command("rerun")
def judge_rerun(
    job: RequiredJobOption,
    rubric: Annotated[str, typer.Option("--rubric", help="The rubric to judge with (its latest version).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every conversation is judged.")] = False,
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Judge a job's conversations again with a rubric, as a workflow, without regenerating
    anything; earlier verdicts stay in each conversation's history."""

    async def action(ctx: Context) -> dict[str, Any]:
        job_id = await reviews.owned_job(ctx.sessions, _owner(ctx, user, admin), job)
        started = await judges.start_rerun(ctx.sessions, ctx.temporal, ctx.settings, job_id, rubric)
        shown = started.model_dump(mode="json")
        if wait:
            result = await ctx.temporal.get_workflow_handle(started.workflow_id).result()
            shown["result"] = result if isinstance(result, dict) else result.model_dump(mode="json")
        return shown

    shown = _run(action, with_temporal=True)
    if as_json:
        _print_json(shown)
        return
    console.print(f"judging job {shown['job_id']} again with {shown['rubric_name']} v{shown['rubric_version']}: "
                  f"workflow {shown['workflow_id']}")
    if "result" in shown:
        console.print(f"judged {shown['result']['judged']}, failed {shown['result']['failed']}")


# --- export -------------------------------------------------------------------------------


@app.command("export")
def export_dataset(
    out: Annotated[str, typer.Option("--out", help="A new or empty directory (written by the worker), or s3://bucket/prefix.")],
    job: Annotated[list[str] | None, typer.Option("--job", help="Only this job's conversations (repeatable).")] = None,
    status: Annotated[ReviewStatus, typer.Option("--status", help="Review status to export.")] = ReviewStatus.APPROVED,
    min_quality: MinQualityOption = None,
    min_judge_score: MinJudgeScoreOption = None,
    export_format: Annotated[ExportFormat, typer.Option("--format", help="messages (chat) or sharegpt.")] = ExportFormat.MESSAGES,
    split: Annotated[str, typer.Option("--split", help="Named shares adding up to 1.")] = "train=1",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the order and the split.")] = 0,
    allow_stand_in: Annotated[
        bool,
        typer.Option("--allow-stand-in", help="Export conversations of the offline Claude stand-in too, marked placeholder."),
    ] = False,
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Export conversations as a training set (data/{split}.jsonl, dataset card, manifest), as a
    Temporal workflow export-{id}; the same selection and seed give the same bytes."""

    async def action(ctx: Context) -> ExportResult:
        request = exports.ExportRequest(
            owner=_owner(ctx, user, admin), out=out, jobs=tuple(job or ()), review_status=status,
            min_quality=min_quality, min_judge_score=min_judge_score, format=export_format, split=split, seed=seed, allow_stand_in=allow_stand_in,
        )
        return await exports.export(ctx.sessions, ctx.temporal, ctx.settings, request)

    result = _run(action, with_temporal=True)
    files = exports.full_paths(result)
    if as_json:
        _print_json({"export_id": str(result.export_id), "workflow_id": export_workflow.export_workflow_id(result.export_id),
                     "location": result.location, "count": result.count, "files": files, "splits": result.splits,
                     "placeholder": result.placeholder})
        return
    console.print(f"exported {result.count} conversations ({', '.join(f'{k} {v}' for k, v in result.splits.items())}) "
                  f"to {result.location}")
    for path in files:
        console.print(f"  {path}", highlight=False)
    if result.placeholder:
        console.print(f"[bold]{result.placeholder} of them are placeholder text of the offline Claude stand-in, "
                      "not training data[/] (the dataset card says so first)")
    if not result.location.startswith("s3://"):
        console.print(f'load it: python -c \'from datasets import load_dataset; print(load_dataset("{result.location}"))\'',
                      highlight=False)


def main() -> NoReturn:
    """The command line, with typer's own errors in one line too: a usage error comes as a boxed
    panel under the usage text."""
    try:
        result = app(standalone_mode=False)
    except typer.TyperException as exc:
        # No args: the help is printed already (typer's rich_utils matches the class by name too).
        if type(exc).__name__ != "NoArgsIsHelpError":
            typer.echo(f"error: {_usage_message(exc)}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    # Without standalone mode typer returns a typer.Exit's code, or the command's None.
    sys.exit(result if isinstance(result, int) else 0)


def _usage_message(error: typer.TyperException) -> str:
    """`--tier: 'bogus' is not one of ...` rather than `Invalid value for '--tier': Value error, ...`."""
    param = error.param if type(error) is typer.BadParameter else None  # not MissingParameter's wording
    if param is not None:
        name = param.opts[0] if param.opts else param.name
        return f"{name}: {_first_line(error.message.removeprefix('Value error, '))}"
    return _first_line(error.format_message())


if __name__ == "__main__":
    run_and_exit(main)
