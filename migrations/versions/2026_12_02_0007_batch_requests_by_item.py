"""An index on message_batch_requests (batch_item_id): an item's start counts the requests
earlier runs of it staged, an index scan rather than a scan of every staged request.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_batch_requests_batch_item_id", "message_batch_requests", ["batch_item_id"])


def downgrade() -> None:
    op.drop_index("ix_message_batch_requests_batch_item_id", table_name="message_batch_requests")
