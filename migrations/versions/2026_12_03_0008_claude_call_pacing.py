"""claude_call_pacing: the next free start time of a Claude task queue's calls, shared by every
worker of the queue, so calls go out evenly at the configured calls per minute (activities/claude_pacing.py).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "claude_call_pacing",
        sa.Column("task_queue", sa.Text(), nullable=False),
        sa.Column("next_call_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_queue", name=op.f("pk_claude_call_pacing")),
    )


def downgrade() -> None:
    op.drop_table("claude_call_pacing")
