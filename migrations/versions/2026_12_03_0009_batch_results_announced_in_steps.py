"""message_batch_requests.result and .announced_at: an ended batch's results are stored in one
pass, then announced to their items a step at a time, so the Message Batches workflow can
continue as new between steps (the signals a step sets off fit its history's margin).

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("message_batch_requests", sa.Column("result", postgresql.JSONB(), nullable=True))
    op.add_column("message_batch_requests", sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("message_batch_requests", "announced_at")
    op.drop_column("message_batch_requests", "result")
