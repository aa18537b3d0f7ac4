"""conversations.provider of the conversations written before it was recorded (0011 left them
NULL, unknown), where the raw reply file says who answered:

- the offline stand-in: its ids (`msg_standin_...`, `req_standin_...`, `msgbatch_standin_...`),
  or `generated_by` "offline-standin" (written with no API key, which only the stand-in answers);
- Anthropic's API: a message id of Anthropic's (`msg_...`) and none of the stand-in's marks
  (`generated_by` "anthropic" alone proves nothing: it only said an API key was set).

The host is not known: provider_host stays NULL. A row whose file is missing, unreadable or says
neither stays NULL (unknown). Without S3 (or in offline SQL mode) nothing is filled in, with a
warning: run the upgrade again where S3 answers (the migration is recorded, so first
`alembic downgrade 0013`: the downgrade changes nothing).

Revision ID: 0015
Revises: 0013 (0014 once the Message Batches migration lands before it)
"""

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from alembic import op
from botocore.exceptions import BotoCoreError, ClientError

from brightrun.settings import Settings
from brightrun.storage import Storage

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(f"alembic.migration.{revision}")

ANTHROPIC, OFFLINE_STANDIN = "anthropic", "offline-standin"
READS_AT_ONCE = 16
UPDATE_CHUNK = 1000


def answered_by(raw: dict[str, Any]) -> str | None:
    """Who answered, as far as a raw reply file proves it; None when it does not."""
    message = raw.get("message") or {}
    message_id = str(message.get("id") or "")
    standin_marks = (
        raw.get("generated_by") == OFFLINE_STANDIN,
        message_id.startswith("msg_standin_"),
        str(raw.get("request_id") or "").startswith("req_standin_"),
        str(raw.get("message_batch_id") or "").startswith("msgbatch_standin_"),
    )
    if any(standin_marks):
        return OFFLINE_STANDIN
    return ANTHROPIC if message_id.startswith("msg_") else None


def _read(storage: Storage, key: str) -> str | None:
    try:
        body = storage.client.get_object(Bucket=storage.conversation_bucket, Key=key)["Body"].read()
        return answered_by(json.loads(body))
    except (ClientError, BotoCoreError, ValueError, AttributeError):
        return None


def upgrade() -> None:
    if op.get_context().as_sql:
        log.warning("offline SQL mode: conversations.provider is not backfilled (it reads the raw reply files)")
        return
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, raw_storage_path FROM conversations WHERE provider IS NULL")).all()
    if not rows:
        return
    storage = Storage(Settings())
    try:
        storage.client.head_bucket(Bucket=storage.conversation_bucket)
    except (ClientError, BotoCoreError) as exc:
        log.warning("S3 does not answer (%s): %d conversations keep an unknown provider", exc, len(rows))
        return
    with ThreadPoolExecutor(READS_AT_ONCE) as pool:
        providers = list(pool.map(lambda row: _read(storage, row.raw_storage_path), rows))
    found: dict[str, list[Any]] = {ANTHROPIC: [], OFFLINE_STANDIN: []}
    for row, provider in zip(rows, providers, strict=True):
        if provider is not None:
            found[provider].append(row.id)
    update = sa.text("UPDATE conversations SET provider = :provider WHERE provider IS NULL AND id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    for provider, ids in found.items():
        for start in range(0, len(ids), UPDATE_CHUNK):
            bind.execute(update, {"provider": provider, "ids": ids[start : start + UPDATE_CHUNK]})
    log.info(
        "conversations.provider backfilled: %d anthropic, %d offline-standin, %d left unknown",
        len(found[ANTHROPIC]), len(found[OFFLINE_STANDIN]), len(rows) - len(found[ANTHROPIC]) - len(found[OFFLINE_STANDIN]),
    )


def downgrade() -> None:
    """Nothing: a backfilled provider cannot be told from a recorded one, and either is true."""
