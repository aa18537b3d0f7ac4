"""batch_jobs.concurrent_processing up to 10,000: 100 items in flight made at most 100 calls at
once, 150 a minute at Claude's 40 s a call, below what a Tier 4 account allows.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Named in full: op.f() keeps the naming convention from prefixing it again.
CONSTRAINT = op.f("ck_batch_jobs_concurrent_processing")


def upgrade() -> None:
    op.drop_constraint(CONSTRAINT, "batch_jobs", type_="check")
    op.create_check_constraint(CONSTRAINT, "batch_jobs", "concurrent_processing BETWEEN 1 AND 10000")


def downgrade() -> None:
    op.execute("UPDATE batch_jobs SET concurrent_processing = 100 WHERE concurrent_processing > 100")
    op.drop_constraint(CONSTRAINT, "batch_jobs", type_="check")
    op.create_check_constraint(CONSTRAINT, "batch_jobs", "concurrent_processing BETWEEN 1 AND 100")
