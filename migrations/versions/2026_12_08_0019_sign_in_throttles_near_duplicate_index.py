"""Sign-in throttling keyed by the name attempted, whether or not a user has it (so an unknown
name costs as few Argon2 checks as a known one and answers alike), in a table of its own instead
of two columns of `users`; and a partial index of the near-duplicates, so the review queue
filtered to them counts and pages over a few rows' index entries, not the whole table.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEAR_DUPLICATE_INDEX = "ix_conversations_near_duplicate_review_status_created_at"


def upgrade() -> None:
    op.create_table(
        "sign_in_throttles",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sign_in_throttles")),
    )
    op.create_index(op.f("ix_sign_in_throttles_last_failure_at"), "sign_in_throttles", ["last_failure_at"])
    op.drop_column("users", "failed_sign_ins")
    op.drop_column("users", "throttled_until")
    op.create_index(
        NEAR_DUPLICATE_INDEX, "conversations", ["review_status", "created_at", "id"],
        postgresql_include=["created_by", "batch_job_id", "quality_score"],
        postgresql_where=sa.text("near_duplicate"),
    )


def downgrade() -> None:
    op.drop_index(NEAR_DUPLICATE_INDEX, table_name="conversations")
    op.add_column("users", sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("failed_sign_ins", sa.Integer(), server_default="0", nullable=False))
    op.drop_index(op.f("ix_sign_in_throttles_last_failure_at"), table_name="sign_in_throttles")
    op.drop_table("sign_in_throttles")
