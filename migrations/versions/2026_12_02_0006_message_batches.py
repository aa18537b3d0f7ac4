"""Message Batches mode: a job's delivery mode, the Anthropic batches it submitted (recorded
before they are polled, so a restart never submits twice) and the requests staged for them.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from models.enums import BatchResultType, DeliveryMode, MessageBatchState, sql_in_list

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "batch_jobs", sa.Column("mode", sa.String(length=10), server_default=DeliveryMode.ONLINE.value, nullable=False)
    )
    op.create_check_constraint(op.f("ck_batch_jobs_mode"), "batch_jobs", f"mode IN ({sql_in_list(DeliveryMode)})")
    op.create_table(
        "message_batches",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("batch_job_id", sa.UUID(), nullable=False),
        sa.Column("anthropic_batch_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), server_default=MessageBatchState.SUBMITTING.value, nullable=False),
        sa.Column("request_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("request_counts", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("results_collected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"status IN ({sql_in_list(MessageBatchState)})", name=op.f("ck_message_batches_status")),
        sa.ForeignKeyConstraint(
            ["batch_job_id"], ["batch_jobs.id"], name=op.f("fk_message_batches_batch_job_id_batch_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_batches")),
        sa.UniqueConstraint("anthropic_batch_id", name=op.f("uq_message_batches_anthropic_batch_id")),
    )
    op.create_index(op.f("ix_message_batches_batch_job_id"), "message_batches", ["batch_job_id"], unique=False)
    op.create_table(
        "message_batch_requests",
        sa.Column("custom_id", sa.String(length=64), nullable=False),
        sa.Column("batch_job_id", sa.UUID(), nullable=False),
        sa.Column("batch_item_id", sa.UUID(), nullable=False),
        sa.Column("message_batch_id", sa.UUID(), nullable=True),
        sa.Column("request_key", sa.Text(), nullable=False),
        sa.Column("raw_key", sa.Text(), nullable=False),
        sa.Column("request_bytes", sa.Integer(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("result_type", sa.String(length=20), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            f"result_type IN ({sql_in_list(BatchResultType)})", name=op.f("ck_message_batch_requests_result_type")
        ),
        sa.ForeignKeyConstraint(
            ["batch_job_id"],
            ["batch_jobs.id"],
            name=op.f("fk_message_batch_requests_batch_job_id_batch_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["batch_item_id"],
            ["batch_items.id"],
            name=op.f("fk_message_batch_requests_batch_item_id_batch_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_batch_id"],
            ["message_batches.id"],
            name=op.f("fk_message_batch_requests_message_batch_id_message_batches"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("custom_id", name=op.f("pk_message_batch_requests")),
    )
    # The requests of a job still waiting for a batch, oldest first.
    op.create_index(
        "ix_message_batch_requests_waiting",
        "message_batch_requests",
        ["batch_job_id", "message_batch_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_message_batch_requests_waiting", table_name="message_batch_requests")
    op.drop_table("message_batch_requests")
    op.drop_index(op.f("ix_message_batches_batch_job_id"), table_name="message_batches")
    op.drop_table("message_batches")
    op.drop_constraint(op.f("ck_batch_jobs_mode"), "batch_jobs", type_="check")
    op.drop_column("batch_jobs", "mode")
