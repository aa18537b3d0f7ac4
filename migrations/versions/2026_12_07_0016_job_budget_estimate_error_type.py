"""A job's dry-run estimate and budget, why it paused, and each failed item's error type.

`estimate` holds what `launch --dry-run` would print (tokens, cost online and in batch mode,
seconds), so `status` can show it beside the actual. `max_cost_usd` is the budget (`launch
--max-cost`); `pause_reason` says why a job paused itself ("budget reached"). `error_type` is the
ApplicationError type of an item's last failure, so failures can be counted by kind.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("batch_jobs", sa.Column("estimate", JSONB(), nullable=True))
    op.add_column("batch_jobs", sa.Column("max_cost_usd", sa.Numeric(16, 10, asdecimal=False), nullable=True))
    op.add_column("batch_jobs", sa.Column("pause_reason", sa.Text(), nullable=True))
    op.add_column("batch_items", sa.Column("error_type", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("batch_items", "error_type")
    op.drop_column("batch_jobs", "pause_reason")
    op.drop_column("batch_jobs", "max_cost_usd")
    op.drop_column("batch_jobs", "estimate")
