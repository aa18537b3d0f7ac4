"""An index on batch_items (batch_job_id, status, position): pages of a job's queued items and
the per-status counts are index scans, not scans of the whole job.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_batch_items_batch_job_id_status", "batch_items", ["batch_job_id", "status", "position"])


def downgrade() -> None:
    op.drop_index("ix_batch_items_batch_job_id_status", table_name="batch_items")
