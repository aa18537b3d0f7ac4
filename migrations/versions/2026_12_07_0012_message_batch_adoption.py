"""message_batches.adopted_at: a batch a retried submission took from the API's listing, not
from the answer of its own create. It is ours only once its results name our requests; until
then it is never cancelled (it may be another user's).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("message_batches", sa.Column("adopted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("message_batches", "adopted_at")
