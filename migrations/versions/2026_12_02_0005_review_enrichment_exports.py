"""Review, enrichment and exports: each conversation gets a review status (with who, when and
why), the enrichment that makes it training-ready and searchable, and every export is recorded.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from models.enums import ExportFormat, ExportStatus, ReviewStatus, sql_in_list

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONVERSATION_COLUMNS = [
    sa.Column("review_status", sa.String(length=20), server_default=ReviewStatus.PENDING_REVIEW.value, nullable=False),
    sa.Column("reviewed_by", sa.String(length=200), nullable=True),
    sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("review_reason", sa.Text(), nullable=True),
    sa.Column("user_turns", sa.Integer(), nullable=True),
    sa.Column("assistant_turns", sa.Integer(), nullable=True),
    sa.Column("user_tokens", sa.Integer(), nullable=True),
    sa.Column("assistant_tokens", sa.Integer(), nullable=True),
    sa.Column("quality_parts", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column("provenance", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column("content_hash", sa.String(length=64), nullable=True),
    sa.Column("minhash", postgresql.BYTEA(), nullable=True),
    sa.Column("near_duplicate", sa.Boolean(), server_default="false", nullable=False),
    sa.Column("near_duplicate_of", sa.UUID(), nullable=True),
    sa.Column("failed_checks", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
    sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=True),
]


def upgrade() -> None:
    for column in _CONVERSATION_COLUMNS:
        op.add_column("conversations", column)
    op.create_check_constraint(
        op.f("ck_conversations_review_status"), "conversations", f"review_status IN ({sql_in_list(ReviewStatus)})"
    )
    op.create_index("ix_conversations_created_by_review_status", "conversations", ["created_by", "review_status"])
    op.create_index("ix_conversations_created_by_content_hash", "conversations", ["created_by", "content_hash"])
    op.create_table(
        "exports",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), server_default=ExportStatus.RUNNING.value, nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("selection", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("conversation_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("split_counts", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({sql_in_list(ExportStatus)})", name=op.f("ck_exports_status")),
        sa.CheckConstraint(f"format IN ({sql_in_list(ExportFormat)})", name=op.f("ck_exports_format")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    op.create_index(op.f("ix_exports_created_by"), "exports", ["created_by"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_exports_created_by"), table_name="exports")
    op.drop_table("exports")
    op.drop_index("ix_conversations_created_by_content_hash", table_name="conversations")
    op.drop_index("ix_conversations_created_by_review_status", table_name="conversations")
    op.drop_constraint(op.f("ck_conversations_review_status"), "conversations", type_="check")
    for column in reversed(_CONVERSATION_COLUMNS):
        op.drop_column("conversations", column.name)
