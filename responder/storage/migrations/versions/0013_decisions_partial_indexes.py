"""decisions' indexes on rule, flow, run, service and approval hold only the rows that have
one: the alerts no rule acts on (most of a storm) no longer write four index entries each

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# (index, its columns, the column whose value a row must have to be in it)
INDEXES = (
    ("ix_decisions_flow_run", ["flow_run_id"], "flow_run_id"),
    ("ix_decisions_approval_state", ["approval_state"], "approval_state"),
    ("ix_decisions_service", ["service"], "service"),
    ("ix_decisions_rule", ["rule", "id"], "rule"),
    ("ix_decisions_flow_created", ["flow", "created_at"], "flow"),
)


def upgrade() -> None:
    for name, columns, present in INDEXES:
        where = sa.text(f"{present} IS NOT NULL")
        op.drop_index(name, table_name="decisions")
        op.create_index(name, "decisions", columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, columns, _ in INDEXES:
        op.drop_index(name, table_name="decisions")
        op.create_index(name, "decisions", columns)
