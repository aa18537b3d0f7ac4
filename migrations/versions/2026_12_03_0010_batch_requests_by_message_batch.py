"""An index on message_batch_requests.message_batch_id: claiming, storing and announcing a
batch's results select its requests by it, a step at a time (50 steps for 10,000 results).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_batch_requests_message_batch_id", "message_batch_requests", ["message_batch_id"])


def downgrade() -> None:
    op.drop_index("ix_message_batch_requests_message_batch_id", table_name="message_batch_requests")
