"""The Bright Run command line: launch batches, watch them, inspect the catalog.

    python starter.py launch --persona "David Chen" --arc "Couple Conflict -> Alignment" \\
        --topic "Essential Estate Planning" --tier template
    python starter.py status JOB [--json]
    python starter.py watch JOB
    python starter.py pause|resume|cancel|retry JOB [--json]
    python starter.py jobs [--status S] [--user U] [--json]
    python starter.py catalog [--json]
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import asyncpg
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from service import batches
from service.catalog import list_catalog
from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings, get_settings
from brightrun.temporal_client import connect, connect_options, temporal_address
from models.enums import DeliveryMode, ErrorPolicy, JobStatus, Tier

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Launch and control Bright Run batch jobs.")
console = Console()
T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    sessions: async_sessionmaker
    client: Client | None


@asynccontextmanager
async def _context(with_temporal: bool) -> AsyncIterator[Context]:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        client = await connect(settings) if with_temporal else None
        yield Context(settings, create_sessionmaker(engine), client)
    finally:
        await engine.dispose()


def _run(action: Callable[[Context], Awaitable[T]], with_temporal: bool = False) -> T:
    """Run one command. Every failure ends in one clear line and a non-zero exit: 2 for bad
    input, 3 when a service cannot be reached or refuses, 1 for anything else."""

    async def main() -> T:
        async with _context(with_temporal) as ctx:
            return await action(ctx)

    try:
        return asyncio.run(main())
    except batches.BatchInputError as exc:
        _fail(2, str(exc))
    except (SQLAlchemyError, asyncpg.PostgresError) as exc:
        _fail(3, f"PostgreSQL at {_database_address()}: {_first_line(getattr(exc, 'orig', None) or exc)}. {_STACK_HINT}")
    except RPCError as exc:
        _fail(3, f"Temporal at {temporal_address(get_settings())}: {_first_line(exc)}. {_STACK_HINT}")
    except (BotoCoreError, ClientError) as exc:
        _fail(3, f"S3 storage: {_first_line(exc)}. {_STACK_HINT}")
    except RuntimeError as exc:
        if "Failed client connect" not in str(exc):
            raise
        _fail(3, f"Temporal at {temporal_address(get_settings())}: {_first_line(exc)}. {_STACK_HINT}")
    except (ConnectionError, OSError, TimeoutError) as exc:
        # asyncpg refuses with OSError, the Temporal client with RuntimeError("Failed client connect").
        _fail(3, f"cannot reach a service ({exc.__class__.__name__}: {_first_line(exc)}). {_STACK_HINT}")
    except Exception as exc:  # noqa: BLE001 - the last resort of a command line: one line, never a traceback
        _fail(1, f"{exc.__class__.__name__}: {_first_line(exc)}")


_STACK_HINT = "Is the stack up (`make up`, `make status`)?"


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def _database_address() -> str:
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
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Items in flight at once (1-100; default DEFAULT_CONCURRENCY).")] = None,
    on_error: Annotated[ErrorPolicy, typer.Option("--on-error", help="continue, or stop at the first failed item.")] = ErrorPolicy.CONTINUE,
    name: Annotated[str | None, typer.Option("--name", help="A name for the job.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="User id the files are stored under.")] = None,
    mode: Annotated[
        DeliveryMode,
        typer.Option("--mode", help="online: one Messages call per item; batch: Anthropic Message Batches, half the price."),
    ] = DeliveryMode.ONLINE,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create a batch job (personas x arcs x topics) and start its workflow."""

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
        )
        return await batches.launch(ctx.sessions, ctx.client, ctx.settings, request)

    job = _run(action, with_temporal=True)
    settings = get_settings()
    if as_json:
        _print_json({"job_id": str(job.job_id), "workflow_id": job.workflow_id, "total_items": job.total_items})
        return
    console.print(f"launched job [bold]{job.job_id}[/] with {job.total_items} items")
    console.print(f"workflow {job.workflow_id}: {settings.temporal_ui_url}/namespaces/{connect_options(settings)['namespace']}/workflows/{job.workflow_id}")
    console.print(f"follow it: .venv/bin/python starter.py watch {job.job_id}")


def _status_table(status: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    for key, value in status.items():
        if value is not None:
            table.add_row(key, str(value))
    return table


@app.command()
def status(
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a job's state, counters, ETA and token usage."""
    _print_status(_run(lambda ctx: batches.job_status(ctx.sessions, job, ctx.client), with_temporal=True), as_json)


def _print_status(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(result)
    else:
        console.print(_status_table(result))


def _control(action: str, job: str, as_json: bool) -> None:
    _print_status(_run(lambda ctx: batches.control_job(ctx.sessions, ctx.client, job, action), with_temporal=True), as_json)


@app.command()
def pause(job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Start no new items; items in flight finish. Waits until the job shows paused."""
    _control("pause", job, as_json)


@app.command()
def resume(job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Resume a paused job. Waits until it shows processing."""
    _control("resume", job, as_json)


@app.command()
def cancel(job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Cancel in-flight items, mark unstarted ones cancelled, end the job cancelled."""
    _control("cancel", job, as_json)


@app.command()
def retry(job: Annotated[str, typer.Argument(help="Job id.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Re-run exactly the failed items of an ended job, with their original parameters."""
    _print_status(
        _run(lambda ctx: batches.retry_job(ctx.sessions, ctx.client, ctx.settings, job), with_temporal=True), as_json
    )


@app.command()
def watch(
    job: Annotated[str, typer.Argument(help="Job id.")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """A live progress bar until the job ends."""

    async def action(ctx: Context) -> dict[str, Any]:
        current = await batches.job_status(ctx.sessions, job, ctx.client)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(current["status"], total=current["total"], detail="")
            while True:
                eta = current["eta_seconds"]
                progress.update(
                    task,
                    description=current["status"],
                    completed=current["completed"] + current["cancelled"],
                    detail=f"ok {current['successful']}  failed {current['failed']}  cancelled {current['cancelled']}"
                    f"  in flight {current['in_flight']}  ${current['cost_usd']:.4f}" + (f"  eta {eta:.0f}s" if eta else ""),
                )
                if JobStatus(current["status"]).is_final:
                    return current
                await asyncio.sleep(interval)
                current = await batches.job_status(ctx.sessions, job, ctx.client)

    final = _run(action, with_temporal=True)
    console.print(f"job {final['job_id']} ended [bold]{final['status']}[/]" + (f": {final['error_message']}" if final["error_message"] else ""))


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
    result = _run(lambda ctx: list_catalog(ctx.sessions))
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


if __name__ == "__main__":
    app()
