"""message_batches: what a retried submission needs to adopt only a batch its own create may
have made, and to find it among same-size batches of others.

- create_sent_at: set just before the create is sent; cleared when the API answers without a
  batch (4xx, 529). Set while anthropic_batch_id is null: the create's outcome is unknown.
- foreign_batch_ids: adopted candidates whose results proved them another's.
- released_at: the adoption was given up and the requests went back to waiting.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("message_batches", sa.Column("create_sent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "message_batches",
        sa.Column("foreign_batch_ids", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
    )
    op.add_column("message_batches", sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("message_batches", "released_at")
    op.drop_column("message_batches", "foreign_batch_ids")
    op.drop_column("message_batches", "create_sent_at")
