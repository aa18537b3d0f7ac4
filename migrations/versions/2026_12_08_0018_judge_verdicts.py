"""Claude as judge: rubrics in the catalog, each conversation's latest verdict on its row, every
verdict in a history, and a job's judging counted apart.

`judge_rubrics` holds each version of a rubric file (devtools/rubrics/<name>.v<n>.json) as
loaded; a verdict names the rubric and version it applied. The conversation's `judge_*` columns
are its latest verdict (what review and export filter on); `conversation_verdicts` keeps one row
per conversation and rubric version, so a rerun with a new version keeps the old verdicts.
`batch_jobs.judged_items` and `judge_cost_usd` count a job's judging (its `cost_usd` counts
everything, judging included).

Revision ID: 0018
Revises: 0016 (the lead re-points it after 0017 when merging)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COST = sa.Numeric(16, 10, asdecimal=False)


def upgrade() -> None:
    op.create_table(
        "judge_rubrics",
        sa.Column("id", UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_judge_rubrics"),
        sa.UniqueConstraint("name", "version", name="uq_judge_rubrics_name_version"),
    )
    op.add_column("conversations", sa.Column("judge_score", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column("judge_scores", JSONB(), nullable=True))
    op.add_column("conversations", sa.Column("judge_rubric", sa.String(100), nullable=True))
    op.add_column("conversations", sa.Column("judge_rubric_version", sa.Integer(), nullable=True))
    op.add_column("conversations", sa.Column("judge_model", sa.String(100), nullable=True))
    op.add_column("conversations", sa.Column("judge_usage", JSONB(), nullable=True))
    op.add_column("conversations", sa.Column("judge_cost_usd", _COST, nullable=True))
    op.add_column("conversations", sa.Column("judged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_conversations_batch_job_id_judge_score", "conversations", ["batch_job_id", "judge_score"])
    op.create_table(
        "conversation_verdicts",
        sa.Column("id", UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("conversation_pk", UUID(as_uuid=True), nullable=False),
        sa.Column("batch_job_id", UUID(as_uuid=True), nullable=False),
        sa.Column("rubric_name", sa.String(100), nullable=False),
        sa.Column("rubric_version", sa.Integer(), nullable=False),
        sa.Column("judge_model", sa.String(100), nullable=False),
        sa.Column("overall", sa.Float(), nullable=False),
        sa.Column("criteria", JSONB(), nullable=False),
        sa.Column("usage", JSONB(), nullable=False),
        sa.Column("cost_usd", _COST, nullable=False),
        sa.Column("raw_key", sa.Text(), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_verdicts"),
        sa.ForeignKeyConstraint(
            ["conversation_pk"], ["conversations.id"], name="fk_conversation_verdicts_conversation_pk_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["batch_job_id"], ["batch_jobs.id"], name="fk_conversation_verdicts_batch_job_id_batch_jobs",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "conversation_pk", "rubric_name", "rubric_version", name="uq_conversation_verdicts_conversation_pk"
        ),
    )
    op.create_index("ix_conversation_verdicts_batch_job_id", "conversation_verdicts", ["batch_job_id"])
    op.add_column("batch_jobs", sa.Column("judged_items", sa.Integer(), server_default="0", nullable=False))
    op.add_column("batch_jobs", sa.Column("judge_cost_usd", _COST, server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("batch_jobs", "judge_cost_usd")
    op.drop_column("batch_jobs", "judged_items")
    op.drop_index("ix_conversation_verdicts_batch_job_id", table_name="conversation_verdicts")
    op.drop_table("conversation_verdicts")
    op.drop_index("ix_conversations_batch_job_id_judge_score", table_name="conversations")
    for column in (
        "judged_at", "judge_cost_usd", "judge_usage", "judge_model", "judge_rubric_version", "judge_rubric",
        "judge_scores", "judge_score",
    ):
        op.drop_column("conversations", column)
    op.drop_table("judge_rubrics")
