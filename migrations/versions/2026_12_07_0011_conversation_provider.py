"""conversations.provider and provider_host: who wrote each conversation (Anthropic's API or the
offline stand-in) and the API host its call went to, so that an export can tell placeholder text
from training data. Rows written before stay NULL: their provider is unknown.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.enums import ClaudeProvider, sql_in_list

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("provider", sa.String(length=20), nullable=True))
    op.add_column("conversations", sa.Column("provider_host", sa.String(length=255), nullable=True))
    op.create_check_constraint(
        op.f("ck_conversations_provider"), "conversations", f"provider IN ({sql_in_list(ClaudeProvider)})"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_conversations_provider"), "conversations", type_="check")
    op.drop_column("conversations", "provider_host")
    op.drop_column("conversations", "provider")
