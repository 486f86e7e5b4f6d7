"""approvals: whether a decision's run waits for a person, and who answered

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("approval", sa.JSON(none_as_null=True), nullable=True))
        batch_op.create_index("ix_decisions_approval_state", ["approval_state"])


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_approval_state")
        batch_op.drop_column("approval")
        batch_op.drop_column("approval_state")
