"""The review queue of a job ordered worst or best judged first, paged by keyset on (the judge
score with the conversations not judged last, created_at, id): an index per order, so any page
of 100,000 conversations is one index range scan, as in created order.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The key expressions exactly as service/review.py orders by them (the planner matches them).
INDEXES = {
    "ix_conversations_batch_job_id_review_status_worst_first": "coalesce(judge_score, 6)",
    "ix_conversations_batch_job_id_review_status_best_first": "coalesce(- judge_score, 0)",
}


def upgrade() -> None:
    for name, key in INDEXES.items():
        op.create_index(name, "conversations", ["batch_job_id", "review_status", sa.text(key), "created_at", "id"])


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="conversations")
