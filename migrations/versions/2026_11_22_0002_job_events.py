"""Job event log: one row per item event and job transition, the source of log.txt.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_job_id", sa.UUID(), nullable=False),
        sa.Column("batch_item_id", sa.UUID(), nullable=True),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_job_id"], ["batch_jobs.id"], name=op.f("fk_batch_job_events_batch_job_id_batch_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_job_events")),
    )
    op.create_index(op.f("ix_batch_job_events_batch_job_id"), "batch_job_events", ["batch_job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_batch_job_events_batch_job_id"), table_name="batch_job_events")
    op.drop_table("batch_job_events")
