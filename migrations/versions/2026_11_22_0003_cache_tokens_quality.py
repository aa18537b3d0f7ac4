"""Prompt-cache token sums and a finer cost per job, and a quality score per conversation.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("batch_jobs", sa.Column("cache_write_tokens", sa.Integer(), server_default="0", nullable=False))
    op.add_column("batch_jobs", sa.Column("cache_read_tokens", sa.Integer(), server_default="0", nullable=False))
    op.add_column("conversations", sa.Column("quality_score", sa.Float(), nullable=True))
    op.alter_column("batch_jobs", "cost_usd", type_=sa.Numeric(16, 10, asdecimal=False), existing_nullable=False)


def downgrade() -> None:
    op.alter_column("batch_jobs", "cost_usd", type_=sa.Numeric(12, 6, asdecimal=False), existing_nullable=False)
    op.drop_column("conversations", "quality_score")
    op.drop_column("batch_jobs", "cache_read_tokens")
    op.drop_column("batch_jobs", "cache_write_tokens")
