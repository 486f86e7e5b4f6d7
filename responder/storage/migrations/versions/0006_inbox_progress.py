"""inbox progress (items of a row already handled); partial indexes of admitted decisions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ADMITTED: dict[str, Any] = {
    "sqlite_where": sa.text("verdict = 'admitted'"),
    "postgresql_where": sa.text("verdict = 'admitted'"),
}


def upgrade() -> None:
    op.create_table(
        "inbox_progress",
        sa.Column("inbox_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("handled", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("inbox_id"),
    )
    op.create_index("ix_decisions_admitted_incident", "decisions", ["incident", "rule"], **ADMITTED)
    op.create_index("ix_decisions_admitted_flow", "decisions", ["flow", "created_at"], **ADMITTED)
    op.create_index("ix_decisions_admitted_created", "decisions", ["created_at"], **ADMITTED)


def downgrade() -> None:
    op.drop_index("ix_decisions_admitted_created", "decisions")
    op.drop_index("ix_decisions_admitted_flow", "decisions")
    op.drop_index("ix_decisions_admitted_incident", "decisions")
    op.drop_table("inbox_progress")
