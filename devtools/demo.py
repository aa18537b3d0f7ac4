"""`make demo`: start the local stack, launch a real 8-item batch, watch it, and show where the
results are: the workflow in the web UI, the files in S3, the linked rows in PostgreSQL. Then the
way to a training set: review (reject near-duplicates and low quality, approve the rest) and
export the approved subset to `.devstack/exports/`, with the command that loads it; last, the
review workspace's address and a demo reviewer's sign-in (a random password, printed once)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from sqlalchemy import select

from brightrun.db import create_engine, create_sessionmaker
from brightrun.settings import Settings
from brightrun.storage import Storage, job_log_key
from brightrun.temporal_client import connect_options
from models.tables import BatchItem, BatchJob, Conversation
from models.web_ui import jobs_view_path

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = REPO / ".devstack" / "env"
console = Console()

# Each run its own user: the stand-in answers the same prompts with the same conversations, which
# enrichment would rightly flag as near-duplicates of the previous run's.
DEMO_USER = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
DEMO_BATCH = [
    "--persona", "David Chen", "--persona", "Maria Gonzalez",
    "--arc", "Couple Conflict -> Alignment", "--arc", "Anxiety -> Confidence",
    "--topic", "Essential Estate Planning", "--topic", "Retirement Income Planning",
    "--tier", "template", "--concurrency", "4", "--name", "demo batch", "--user", DEMO_USER,
]


def _step(argv: list[str], env: dict[str, str], capture: bool = False) -> str:
    console.print(f"[dim]$ {shlex.join(['python', *argv[1:]])}[/]")
    result = subprocess.run(argv, check=False, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        sys.exit(f"demo stopped: `{shlex.join(argv[1:])}` exited with {result.returncode}")
    return result.stdout or ""


def _stack_env() -> dict[str, str]:
    env = dict(os.environ)
    for line in ENV_FILE.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


async def _report(job_id: str, settings: Settings) -> None:
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    storage = Storage(settings)
    async with sessions() as session:
        job = await session.get(BatchJob, job_id)
        rows = (
            await session.execute(
                select(BatchItem, Conversation)
                .outerjoin(Conversation, Conversation.id == BatchItem.conversation_id)
                .where(BatchItem.batch_job_id == job_id)
                .order_by(BatchItem.position)
            )
        ).all()
    await engine.dispose()

    console.print(f"[bold]job {job_id}: {job.status}, {job.successful_items}/{job.total_items} succeeded[/]")
    for item, conversation in rows:
        console.print(f"item {item.position}: {item.status}" + (f": {item.error_message}" if item.error_message else ""))
        if conversation:
            console.print(f"  batch_items.conversation_id = conversations.id = {conversation.id}", soft_wrap=True)
            for key in (conversation.raw_storage_path, conversation.final_storage_path):
                found = await storage.get_bytes_or_none(storage.conversation_bucket, key) is not None
                console.print(f"  s3://{storage.conversation_bucket}/{key}" + ("" if found else "  (MISSING)"), soft_wrap=True)
    console.print(f"Job log: s3://{storage.log_bucket}/{job_log_key(job_id)}", soft_wrap=True)
    console.print(
        f"Temporal web UI: {settings.temporal_ui_url}/namespaces/{connect_options(settings)['namespace']}/workflows/batch-job-{job_id}",
        soft_wrap=True,
    )
    namespace = connect_options(settings)["namespace"]
    console.print(f"  every job, with name and progress: {settings.temporal_ui_url}{jobs_view_path(namespace)}", soft_wrap=True)
    console.print("  (add the columns BatchJobName, BatchProgress, BatchStatus once: docs/web-ui.md)")
    console.print(
        f"Rows: SELECT * FROM batch_items WHERE batch_job_id = '{job_id}';  (DATABASE_URL in {ENV_FILE.relative_to(REPO)})",
        soft_wrap=True,
    )
    if settings.uses_standin:
        console.print("[bold yellow]Generated with the OFFLINE Claude stand-in[/] (no ANTHROPIC_API_KEY set): "
                      "conversations are synthetic. Set ANTHROPIC_API_KEY and run `make down demo` to use Claude.")


def main() -> None:
    python = sys.executable
    env = dict(os.environ)
    _step([python, "-m", "devtools.devstack", "up"], env)
    env = _stack_env()
    launched = json.loads(_step([python, "starter.py", "launch", *DEMO_BATCH, "--json"], env, capture=True))
    job_id = launched["job_id"]
    console.print(f"launched job {job_id} ({launched['total_items']} items), workflow {launched['workflow_id']}")
    _step([python, "starter.py", "watch", job_id], env)
    os.environ.update(env)
    asyncio.run(_report(job_id, Settings()))
    _to_training_set(python, env, job_id)
    _workspace_sign_in(python, env, job_id)


def _to_training_set(python: str, env: dict[str, str], job_id: str) -> None:
    """Review the job's conversations and export the approved ones, as a person would."""
    review = [python, "starter.py", "review"]
    mine = ["--job", job_id, "--user", DEMO_USER]
    _step([*review, "list", *mine], env)
    # A strict quality bar, so that the demo exports a real subset.
    _step([*review, "reject", *mine, "--near-duplicates", "--below-quality", "0.95"], env)
    _step([*review, "approve", *mine], env)
    out = REPO / ".devstack" / "exports" / job_id
    exported = json.loads(_step(
        # The local stack's conversations are the offline stand-in's (unless ANTHROPIC_API_KEY is
        # set): the card says so in its first line.
        [python, "starter.py", "export", *mine, "--split", "train=0.75,validation=0.25", "--seed", "1",
         "--allow-stand-in", "--out", str(out), "--json"], env, capture=True,
    ))
    console.print(f"exported {exported['count']} approved conversations {exported['splits']} "
                  f"as export {exported['export_id']}:")
    for path in exported["files"]:
        console.print(f"  {path}", soft_wrap=True)
    console.print("Load it with Hugging Face datasets (`pip install datasets`):", soft_wrap=True)
    console.print(f"  .venv/bin/python -c 'from datasets import load_dataset; print(load_dataset(\"{out}\"))'",
                  soft_wrap=True, highlight=False)


def _workspace_sign_in(python: str, env: dict[str, str], job_id: str) -> None:
    """The demo job's owner as a reviewer of the workspace, with a password made for this stack
    and printed this once: no default password exists anywhere."""
    added = _step([python, "starter.py", "users", "add", DEMO_USER, "--role", "reviewer"], env, capture=True)
    password = added.rsplit("password: ", 1)[1].strip()
    web = env["BRIGHTRUN_WEB_URL"]
    console.print(f"[bold]Review workspace: {web}/jobs/{job_id}[/]", soft_wrap=True, highlight=False)
    console.print(f"  sign in as {DEMO_USER} with password {password}  (shown once; "
                  "`starter.py users add NAME --role admin` makes more users)", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    main()
