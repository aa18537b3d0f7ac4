"""The review workspace: users (Argon2id password hashes, roles, sign-in throttling, disabling),
server-side sessions and API tokens (each stored as the SHA-256 of a random token), jobs shared
with other users, every review decision with who made it and when, and the indexes that keep
the review queue a keyset page away from any of 100,000 conversations.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.enums import ReviewStatus, UserRole, sql_in_list

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> columns; the first replaces ix_conversations_created_by_review_status, a prefix of it.
_QUEUE_INDEXES = {
    "ix_conversations_created_by_review_status_created_at": ["created_by", "review_status", "created_at", "id"],
    "ix_conversations_batch_job_id_review_status_created_at": ["batch_job_id", "review_status", "created_at", "id"],
    "ix_conversations_review_status_created_at": ["review_status", "created_at", "id"],
    "ix_conversations_created_at": ["created_at", "id"],
}


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("failed_sign_ins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.CheckConstraint(f"role IN ({sql_in_list(UserRole)})", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    for table in ("user_sessions", "api_tokens"):
        op.create_table(
            table,
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("user_id", sa.UUID(), nullable=False),
            *(
                [sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False)]
                if table == "user_sessions"
                else [sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True)]
            ),
            _created_at(),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint("token_hash", name=op.f(f"uq_{table}_token_hash")),
        )
        op.create_index(op.f(f"ix_{table}_user_id"), table, ["user_id"])
    op.create_table(
        "job_shares",
        sa.Column("batch_job_id", sa.UUID(), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["batch_job_id"], ["batch_jobs.id"], name=op.f("fk_job_shares_batch_job_id_batch_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], name=op.f("fk_job_shares_user_name_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_job_id", "user_name", name=op.f("pk_job_shares")),
    )
    op.create_index(op.f("ix_job_shares_user_name"), "job_shares", ["user_name"])
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("previous", sa.String(length=20), nullable=False),
        sa.Column("undoes", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"decision IN ({sql_in_list(ReviewStatus)})", name=op.f("ck_review_decisions_decision")),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name=op.f("fk_review_decisions_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["undoes"], ["review_decisions.id"], name=op.f("fk_review_decisions_undoes_review_decisions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index(op.f("ix_review_decisions_conversation_id"), "review_decisions", ["conversation_id"])
    op.create_index("ix_review_decisions_decided_by_id", "review_decisions", ["decided_by", "id"])
    op.drop_index("ix_conversations_created_by_review_status", table_name="conversations")
    for name, columns in _QUEUE_INDEXES.items():
        op.create_index(name, "conversations", columns)


def downgrade() -> None:
    for name in reversed(_QUEUE_INDEXES):
        op.drop_index(name, table_name="conversations")
    op.create_index("ix_conversations_created_by_review_status", "conversations", ["created_by", "review_status"])
    op.drop_table("review_decisions")
    op.drop_table("job_shares")
    op.drop_table("api_tokens")
    op.drop_table("user_sessions")
    op.drop_table("users")
