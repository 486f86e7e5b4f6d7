"""incidents: every firing incident's remediation state, to decide it again when a block clears

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("incident", sa.String(length=120), nullable=False),
        sa.Column("alertname", sa.Text(), nullable=False),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("waiting_on", sa.String(length=24), nullable=True),
        sa.Column("block", sa.Text(), nullable=True),
        sa.Column("block_digest", sa.String(length=64), nullable=True),
        sa.Column("holder", sa.Integer(), nullable=True),
        sa.Column("until", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("due", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("incident"),
    )
    op.create_index("ix_incidents_state", "incidents", ["state", "firing"])
    op.create_index("ix_incidents_decision", "incidents", ["decision_id"])


def downgrade() -> None:
    op.drop_index("ix_incidents_decision", table_name="incidents")
    op.drop_index("ix_incidents_state", table_name="incidents")
    op.drop_table("incidents")
