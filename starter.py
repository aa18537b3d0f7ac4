"""The Bright Run command line: launch batches, watch them, inspect the catalog.

    python starter.py launch --persona "David Chen" --arc "Couple Conflict -> Alignment" \\
        --topic "Essential Estate Planning" --tier template [--dry-run] [--max-cost USD]
    python starter.py status JOB [--json]
    python starter.py watch JOB
    python starter.py pause|resume|cancel|retry JOB [--json]
    python starter.py jobs [--status S] [--user U] [--json]
    python starter.py items JOB [--status S] [--json]
    python starter.py log JOB [--follow]
    python starter.py catalog [--json]
    python starter.py review list|show|approve|reject ...
    python starter.py users add NAME --role reviewer|admin [--password-stdin] | list | disable NAME | token NAME
    python starter.py export [--job JOB]... [--status approved] [--min-quality Q] [--format messages|sharegpt] \\
        [--split train=0.9,validation=0.1] [--seed N] [--user U] [--allow-stand-in] --out DIR|s3://bucket/prefix [--json]
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from brightrun.settings import Settings, SettingsError, get_settings
from brightrun.temporal_client import connect, run_and_exit, temporal_address, workflow_ui_url
from brightrun.terminal import Column, render_fields, render_table
from models.enums import DeliveryMode, ErrorPolicy, ExportFormat, ItemStatus, JobStatus, ReviewStatus, Tier, UserRole


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
    from service import batches, users
    from service import catalog as catalogs
    from service import export as exports
    from service import ids as id_prefixes
    from service import items as item_listing
    from service import job_log as job_logs
    from service import judge as judges
    from service import review as reviews
    from workflows import export as export_workflow
else:
    batches, catalogs, exports, judges, reviews, users = (
        _lazy(f"service.{name}") for name in ("batches", "catalog", "export", "judge", "review", "users")
    )
    id_prefixes, item_listing, job_logs = (_lazy(f"service.{name}") for name in ("ids", "items", "job_log"))
    export_workflow = _lazy("workflows.export")

if TYPE_CHECKING:  # imported by the commands that use it: it imports the anthropic SDK
    from service import estimate as estimates

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Launch and control Bright Run batch jobs.")
# A line that carries an id, a URL, a path or a command is printed with soft_wrap=True: the
# terminal wraps it, so it is copied whole (rich would break it at its width, a URL mid-word).
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
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Budget in USD: the job pauses itself before a call could pass it.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what the job would be, cost and take; create nothing.")
    ] = False,
    judge: Annotated[
        bool | None,
        typer.Option("--judge/--no-judge", help="Claude scores each conversation against a rubric (default: on when the catalog has one)."),
    ] = None,
    rubric: Annotated[str | None, typer.Option("--rubric", help="The rubric to judge with (its latest version).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create a batch job (personas x arcs x topics, x samples) and start its workflow; with
    --dry-run only estimate it (docs/cost.md)."""
    from brightrun.claude_client import create_claude_client
    from service import estimate as estimates

    def request_of(ctx: Context) -> batches.LaunchRequest:
        return batches.LaunchRequest(
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
            max_cost_usd=max_cost,
            judge=judge,
            rubric=rubric,
        )

    if dry_run:

        async def estimate_only(ctx: Context) -> estimates.JobEstimate:
            async with create_claude_client(ctx.settings) as claude:
                return await estimates.estimate_job(ctx.sessions, claude, ctx.settings, request_of(ctx))

        _print_estimate(_run(estimate_only), as_json)
        return

    async def action(ctx: Context) -> tuple[batches.LaunchedJob, estimates.JobEstimate]:
        async with create_claude_client(ctx.settings) as claude:
            return await estimates.launch_estimated(ctx.sessions, ctx.temporal, claude, ctx.settings, request_of(ctx))

    job, estimate = _run(action, with_temporal=True)
    settings = get_settings()
    if as_json:
        _print_json({"job_id": str(job.job_id), "workflow_id": job.workflow_id, "total_items": job.total_items,
                     "estimated_cost_usd": estimate.job_cost_usd(), "max_cost_usd": max_cost})
        return
    budget = f", budget ${max_cost:.2f}" if max_cost is not None else ""
    console.print(f"launched job [bold]{job.job_id}[/] with {job.total_items} items "
                  f"(estimated ${estimate.job_cost_usd():.4f}{budget})", soft_wrap=True)
    console.print(f"workflow {job.workflow_id}: {workflow_ui_url(settings, job.workflow_id)}", soft_wrap=True)
    console.print(f"follow it: .venv/bin/python starter.py watch {job.job_id}", soft_wrap=True)


def _print_estimate(estimate: estimates.JobEstimate, as_json: bool) -> None:
    if as_json:
        _print_json(estimate.model_dump(mode="json"))
        return
    console.print("dry run: nothing was created")
    fields = [
        (_status_label(key), ", ".join(value) if isinstance(value, list) else str(value))
        for key, value in estimate.model_dump(mode="json").items()
        if value is not None and value != []
    ]
    render_fields(console, fields)


# Each actual number of `status`, and its estimate shown beside it.
_ESTIMATED = {"cost_usd": "estimated_cost_usd", "input_tokens": "estimated_input_tokens", "output_tokens": "estimated_output_tokens"}
_JOB_HELP = "Job id, or a unique prefix of it (8+ characters)."
# The item counters, shown as one line: `completed` (items that ran to an end, failed ones
# included) beside `successful` and `cancelled` reads as a contradiction. `--json` keeps the keys.
_ITEM_COUNTERS = ("total", "completed", "successful", "failed", "cancelled", "in_flight", "remaining")
# Labels of the other fields where the key alone would mislead; the rest read as their keys.
_STATUS_LABELS = {
    "job_id": "job", "workflow_id": "workflow", "total": "items", "error_message": "reason", "failures": "failed items"
}


def _items_line(status: batches.JobStatusView) -> str:
    queued = max(status.remaining - status.in_flight, 0)
    return (
        f"{status.total}: {status.successful} succeeded, {status.failed} failed, {status.cancelled} cancelled, "
        f"{status.in_flight} in flight, {queued} queued"
    )


def _status_fields(status: batches.JobStatusView) -> list[tuple[str, str]]:
    fields = []
    shown = status.as_json()
    for key, value in shown.items():
        if key in _ITEM_COUNTERS[1:] or key in _ESTIMATED.values() or value is None:
            continue
        if key in _ESTIMATED and shown.get(_ESTIMATED[key]) is not None:
            value = f"{value} (estimated {shown[_ESTIMATED[key]]})"
        if key == "concurrency" and status.mode == DeliveryMode.BATCH:
            continue  # a Message Batch holds every request at once: no concurrency applies
        if key == "total":
            value = _items_line(status)
        elif key == "waiting_on" and status.waiting_on:
            value = "\n".join(outage.summary for outage in status.waiting_on)
        elif key == "templates_too_short_to_cache" and status.templates_too_short_to_cache:
            value = "\n".join(template.summary for template in status.templates_too_short_to_cache)
        elif key == "failures" and status.failures:
            value = "\n".join(kind.summary for kind in status.failures)
            value += f"\n(`starter.py items {status.job_id} --status failed` lists them)"
        fields.append((_status_label(key), str(value)))
    return fields


def _status_label(key: str) -> str:
    """`cost ($)` for cost_usd, `eta (s)` for eta_seconds: the unit in the label, as a person reads it."""
    if key in _STATUS_LABELS:
        return _STATUS_LABELS[key]
    for suffix, unit in (("_usd", " ($)"), ("_seconds", " (s)"), ("_s", " (s)")):
        if key.endswith(suffix):
            return key.removesuffix(suffix).replace("_", " ") + unit
        if f"{suffix}_" in key:  # estimated_cost_usd_batch: the unit after its qualifier
            return key.replace(f"{suffix}_", "_").replace("_", " ") + unit
    return key.replace("_", " ")


WideOption = Annotated[bool, typer.Option("--wide", help="Every column and whole ids, however wide.")]


@app.command()
def status(
    job: Annotated[str, typer.Argument(help=_JOB_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    wide: WideOption = False,
) -> None:
    """Show a job's state, counters, ETA and token usage, its failures by kind, and any outage its items wait for."""
    result = _run(lambda ctx: batches.job_status(ctx.sessions, job, ctx.client, ctx.settings.claude_model), with_temporal=True)
    _print_status(result, as_json, wide)
    if result.database_unavailable:
        # The workflow's numbers were shown; the exit code still says a part is down.
        _fail(3, f"PostgreSQL at {_database_address()}: {result.database_unavailable}. Shown: the workflow's own numbers")


def _print_status(result: batches.JobStatusView, as_json: bool, wide: bool = False) -> None:
    if as_json:
        _print_json(result.as_json())
    else:
        render_fields(console, _status_fields(result), wide)


def _control(action: str, job: str, as_json: bool, wait: float | None, max_cost: float | None = None) -> None:
    """Pause, resume or cancel, then one line: the job's state and its items'."""
    if wait is not None:
        _check_input(lambda: batches.check_control_wait(wait))

    async def act(ctx: Context) -> tuple[batches.JobStatusView, str]:
        result = await batches.control_job(ctx.sessions, ctx.temporal, job, action, wait, max_cost)
        return result, await _short_id(ctx, id_prefixes.IdKind.JOB, result.job_id)

    result, short = _run(act, with_temporal=True)
    if as_json:
        _print_json(result.as_json())
        return
    console.print(
        f"job {short} {result.status.value}: {result.successful} succeeded, {result.failed} failed, "
        f"{result.cancelled} cancelled of {result.total}; {result.in_flight} in flight"
        + (f"; {result.pause_reason}" if result.pause_reason else ""),
        highlight=False,
    )


async def _short_id(ctx: Context, kind: id_prefixes.IdKind, value: uuid.UUID) -> str:
    async with ctx.sessions() as session:
        return (await id_prefixes.short_ids(session, kind, [value]))[value]


async def _short_ids(ctx: Context, kind: id_prefixes.IdKind, values: list[uuid.UUID | None], wide: bool) -> dict[uuid.UUID, str]:
    """Each id as its shortest unique prefix (8+ characters), or whole with --wide."""
    ids = [value for value in values if value is not None]
    if wide:
        return {value: str(value) for value in ids}
    async with ctx.sessions() as session:
        return await id_prefixes.short_ids(session, kind, ids)


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
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    wait: Wait = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="A new budget in USD (a job paused at its budget needs a higher one).")
    ] = None,
) -> None:
    """Resume a paused job. Waits until it shows processing."""
    _control("resume", job, as_json, wait, max_cost)


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False, wait: Wait = None
) -> None:
    """Cancel in-flight items, mark unstarted ones cancelled, end the job cancelled.

    Waits until it has; if it has not by then, says which items have not reported yet and exits 4."""
    _control("cancel", job, as_json, wait)


@app.command()
def retry(job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Re-run exactly the failed items of an ended job, with their original parameters."""
    _print_status(
        _run(lambda ctx: batches.retry_job(ctx.sessions, ctx.temporal, ctx.settings, job), with_temporal=True), as_json
    )


@app.command()
def watch(
    job: Annotated[str, typer.Argument(help=_JOB_HELP)],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """A live progress bar until the job ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
                    detail=f"succeeded {current.successful}  failed {current.failed}  cancelled {current.cancelled}"
                    f"  in flight {current.in_flight}  ${current.cost_usd:.4f}" + (f"  eta {eta:.0f}s" if eta else "")
                    + "".join(f"  waiting for {outage.part}" for outage in current.waiting_on or [])
                    + (f"  {current.pause_reason}" if current.pause_reason else ""),
                )
                if current.status.is_final:
                    return current
                await asyncio.sleep(interval)
                current = await batches.job_status(ctx.sessions, job, ctx.client)

    final = _run(action, with_temporal=True)
    console.print(f"job {final.job_id} ended [bold]{final.status.value}[/]" + (f": {final.error_message}" if final.error_message else ""), soft_wrap=True)


@app.command()
def jobs(
    status: Annotated[JobStatus | None, typer.Option("--status", help="Only jobs in this state.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's jobs.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many jobs.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    wide: WideOption = False,
) -> None:
    """List jobs with their progress, newest first."""

    async def action(ctx: Context) -> tuple[list[batches.JobListing], dict[uuid.UUID, str]]:
        listed = await batches.list_jobs(ctx.sessions, status, user, limit)
        return listed, await _short_ids(ctx, id_prefixes.IdKind.JOB, [job.job_id for job in listed], wide or as_json)

    listed, short = _run(action)
    if as_json:
        _print_json([job.model_dump(mode="json") for job in listed])
        return
    render_table(console, _JOB_COLUMNS, [_job_row(job, short) for job in listed], wide)


# "ended" counts every item that will not run again: succeeded, failed or cancelled.
_JOB_COLUMNS = (
    Column("job"), Column("status"), Column("ended", justify="right"), Column("succeeded", 2, justify="right"),
    Column("failed", 1, justify="right"), Column("cancelled", 3, justify="right"), Column("name", 4, wrap=True),
    Column("cost $", 5, justify="right"), Column("created", 6), Column("user", 7), Column("tier", 8), Column("mode", 9),
)


def _job_row(job: batches.JobListing, short: dict[uuid.UUID, str]) -> list[str]:
    return [
        short[job.job_id], job.status.value, f"{job.completed + job.cancelled}/{job.total}", str(job.successful),
        str(job.failed), str(job.cancelled), job.name, f"{job.cost_usd:.4f}", job.created_at.strftime("%Y-%m-%d %H:%M"),
        job.user, job.tier.value, job.mode.value,
    ]


@app.command()
def items(
    job: Annotated[str, typer.Argument(help=_JOB_HELP)],
    status: Annotated[ItemStatus | None, typer.Option("--status", help="Only items in this state.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    wide: WideOption = False,
) -> None:
    """A job's items in launch order: what each was made from, its state, runs, why it failed, its conversation."""

    async def action(ctx: Context) -> tuple[list[item_listing.ItemListing], dict[uuid.UUID, str], dict[uuid.UUID, str]]:
        listed = await item_listing.list_items(ctx.sessions, job, status)
        whole = wide or as_json
        return (
            listed,
            await _short_ids(ctx, id_prefixes.IdKind.ITEM, [item.item_id for item in listed], whole),
            await _short_ids(ctx, id_prefixes.IdKind.CONVERSATION, [item.conversation_id for item in listed], whole),
        )

    listed, item_ids, conversation_ids = _run(action)
    if as_json:
        _print_json([item.model_dump(mode="json") for item in listed])
        return
    rows = [
        [
            str(item.position), item.status.value, _failure(item), str(item.attempts),
            conversation_ids[item.conversation_id] if item.conversation_id else "-", item.persona or "(deleted)",
            item.emotional_arc or "(deleted)", item.training_topic, str(item.sample), item.template or "auto-selected",
            item_ids[item.item_id],
        ]
        for item in listed
    ]
    render_table(console, _ITEM_COLUMNS, rows, wide)


_ITEM_COLUMNS = (
    Column("#", justify="right"), Column("status"), Column("error", 1, wrap=True), Column("runs", 3, justify="right"),
    Column("conversation", 2), Column("persona", 4, wrap=True), Column("arc", 5, wrap=True),
    Column("topic", 6, wrap=True), Column("sample", 7, justify="right"), Column("template", 8, wrap=True),
    Column("item", 9),
)


def _failure(item: item_listing.ItemListing) -> str:
    if item.error_type is None and item.error_message is None:
        return "-"
    return f"{item.error_type or 'untyped'}: {item.error_message or '(no message)'}"


@app.command()
def log(
    job: Annotated[str, typer.Argument(help=_JOB_HELP)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print new lines as they come, until the job ends.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between reads while following.")] = 1.0,
) -> None:
    """The job's log: each start, end, pause and failure, as in batch-logs/{job}/log.txt."""
    _check_input(lambda: batches.check_watch_interval(interval))

    async def action(ctx: Context) -> None:
        if not follow:
            for line in await job_logs.job_log(ctx.sessions, job):
                _print_line(line)
            return
        async for line in job_logs.follow_job_log(ctx.sessions, job, interval):
            _print_line(line)

    try:
        _run(action)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # Ctrl-C ends a follow: no traceback


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a follower piped into grep or a file sees each line as it comes


@app.command()
def catalog(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False, wide: WideOption = False
) -> None:
    """List personas, emotional arcs, training topics and prompt templates with their ids."""
    result = _run(lambda ctx: catalogs.list_catalog(ctx.sessions))
    if as_json:
        _print_json(result)
        return
    for kind, rows in result.items():
        keys = list(rows[0]) if rows else ["id", "name"]
        # Name first (launch takes it), then the whole id (launch and --template take it whole).
        order = ["name", "id", *(key for key in keys if key not in ("name", "id"))]
        columns = [Column(key.replace("_", " "), position, wrap=key in ("name", "placeholders")) for position, key in enumerate(order)]
        cells = [[_catalog_value(row[key]) for key in order] for row in rows]
        render_table(console, columns, cells, wide, title=kind.replace("_", " "))


def _catalog_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


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
    wide: WideOption = False,
) -> None:
    """Conversations with their review status, quality, judge's score, flags and storage keys, oldest first."""
    selection = reviews.Selection(
        job=job, status=status, min_quality=min_quality, near_duplicates=near_duplicates, below_quality=below_quality,
        judge=_judge_filter(min_judge_score, max_judge_score, min_criterion, max_criterion),
    )

    async def action(ctx: Context) -> tuple[list[reviews.ReviewListing], dict[uuid.UUID, str], dict[uuid.UUID, str]]:
        listed = await reviews.list_conversations(ctx.sessions, _owner(ctx, user, admin), selection, limit, sort=sort)
        whole = wide or as_json
        return (
            listed,
            await _short_ids(ctx, id_prefixes.IdKind.CONVERSATION, [row.conversation_id for row in listed], whole),
            await _short_ids(ctx, id_prefixes.IdKind.JOB, [row.job_id for row in listed], whole),
        )

    listed, conversation_ids, job_ids = _run(action)
    if as_json:
        _print_json([row.model_dump(mode="json") for row in listed])
        return
    rows = [
        [
            conversation_ids[row.conversation_id], row.review_status.value,
            "-" if row.quality_score is None else f"{row.quality_score:.2f}",
            "-" if row.judge_score is None else f"{row.judge_score:.2f}", row.emotional_arc, row.persona,
            row.training_topic, ", ".join(row.failed_checks) or "-", "yes" if row.enriched else "no",
            job_ids[row.job_id], row.reviewed_by or "-", row.final_key,
        ]
        for row in listed
    ]
    render_table(console, _REVIEW_COLUMNS, rows, wide)


_REVIEW_COLUMNS = (
    Column("conversation"), Column("review"), Column("quality", justify="right"), Column("judge", 1, justify="right"),
    Column("arc", 1, wrap=True),
    Column("persona", 2, wrap=True), Column("topic", 4, wrap=True), Column("flags", 3, wrap=True),
    Column("enriched", 5), Column("job", 6), Column("reviewed by", 7), Column("final file", 8),
)


@review_app.command("show")
def review_show(
    conversation: Annotated[str, typer.Argument(help="Conversation id (the business key), or a unique prefix of it (8+ characters).")],
    user: UserOption = None,
    admin: AdminOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """One conversation, readably: metadata, quality, checks, then every turn."""
    from brightrun.storage import Storage

    shown = _run(
        lambda ctx: reviews.show_conversation(ctx.sessions, Storage(ctx.settings), _owner(ctx, user, admin), conversation)
    )
    if as_json:
        _print_json(shown)
        return
    console.print(f"[bold]{shown['title']}[/]  ({shown['conversation_id']})")
    keys = ("review_status", "review_reason", "reviewed_by", "quality_score", "quality_parts", "persona", "emotional_arc",
            "training_topic", "tier", "model", "provider", "provider_host", "counts", "near_duplicate_of", "job_id", "final_key")
    fields = [(key.replace("_", " "), _readable(shown[key])) for key in keys if shown.get(key) is not None]
    render_fields(console, [(label, value) for label, value in fields if value])
    for check in shown["failed_checks"]:
        console.print(f"  failed check {check['check']}: {check['reason']}", highlight=False)
    if shown["judge"]:
        verdict = shown["judge"]
        console.print(f"  judge: {verdict['score']:.2f} ({verdict['rubric']} v{verdict['rubric_version']}, {verdict['model']})", highlight=False)
        for key, criterion in verdict["criteria"].items():
            console.print(f"    {key} {criterion['score']}: {criterion['reason']}", highlight=False)
    for turn in shown["turns"]:
        console.print(f"\n[bold]{turn['role'].upper()}[/]: {turn['content']}", highlight=False)


def _readable(value: object) -> str:
    """`turns 1.00, persona 0.80` for a dict of scores or counts, not Python's repr."""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{key.replace('_', ' ')} {_readable(part)}" for key, part in value.items() if part is not None)
    return str(value)


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


# --- users of the review workspace --------------------------------------------------------

users_app = typer.Typer(no_args_is_help=True, help="Users of the review workspace: add, list, disable, API tokens.")
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name: the --user their jobs are launched with.")],
    role: Annotated[UserRole, typer.Option("--role", help="reviewer (own and shared jobs) or admin (everything).")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
) -> None:
    """Add a user; without --password-stdin a random password is made and printed, this once."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else users.new_password()
    _check_input(lambda: users.check_password(password))
    _run(lambda ctx: users.add_user(ctx.sessions, name, role, password))
    console.print(f"added {role.value} {name}", highlight=False)
    if not password_stdin:
        typer.echo(f"password: {password}")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False) -> None:
    """Every user with their role and whether they are disabled."""
    listed = _run(lambda ctx: users.list_users(ctx.sessions))
    if as_json:
        _print_json([user.model_dump(mode="json") for user in listed])
        return
    rows = [
        [user.name, user.role.value, user.disabled_at.strftime("%Y-%m-%d %H:%M") if user.disabled_at else "-",
         user.created_at.strftime("%Y-%m-%d %H:%M")]
        for user in listed
    ]
    render_table(console, [Column("user"), Column("role"), Column("disabled", priority=1), Column("created", priority=2)], rows)


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Refuse the user's sign-in; their sessions and API tokens stop working at once."""
    _run(lambda ctx: users.disable_user(ctx.sessions, name))
    console.print(f"disabled {name}", highlight=False)


@users_app.command("token")
def users_token(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Print a new API token of the user (for `Authorization: Bearer`), this once."""
    typer.echo(_run(lambda ctx: users.new_api_token(ctx.sessions, name)))


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
    render_table(console, [Column(""), Column("human approved"), Column("human rejected")], [
        ["judge approves", str(result.both_approve), str(result.judge_approves_human_rejects)],
        ["judge rejects", str(result.judge_rejects_human_approves), str(result.both_reject)],
    ])
    render_table(console, [Column("criterion"), Column("mean approved"), Column("mean rejected")], [
        [key, *("-" if means[side] is None else f"{means[side]:.2f}" for side in ("approved", "rejected"))]
        for key, means in result.criteria.items()
    ])
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
    """Export conversations as a training set (data/{split}.jsonl, dataset card, manifest).

    Runs as the Temporal workflow export-{id}; the same selection and seed give the same bytes."""

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
                  f"to {result.location}", soft_wrap=True)
    for path in files:
        console.print(f"  {path}", highlight=False, soft_wrap=True)
    if result.placeholder:
        console.print(f"[bold]{result.placeholder} of them are placeholder text of the offline Claude stand-in, "
                      "not training data[/] (the dataset card says so first)")
    if not result.location.startswith("s3://"):
        console.print(f'load it: python -c \'from datasets import load_dataset; print(load_dataset("{result.location}"))\'',
                      highlight=False, soft_wrap=True)


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
    """`--tier: 'bogus' is not one of ...` rather than `Invalid value for '--tier': Value error, ...`;
    a missing option of a few choices names them on the same line."""
    param = error.param if type(error) is typer.BadParameter else None  # not MissingParameter's wording
    if param is not None:
        name = param.opts[0] if param.opts else param.name
        return f"{name}: {_first_line(error.message.removeprefix('Value error, '))}"
    message = error.format_message()
    if "Choose from:" in message:  # "Missing option '--tier'. Choose from:\n\ttemplate,\n\t..."
        return " ".join(message.split())
    return _first_line(message)


if __name__ == "__main__":
    run_and_exit(main)
