"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_events",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "starts_at", "status"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=True),
        sa.Column("incident", sa.String(length=120), nullable=False),
        sa.Column("alertname", sa.Text(), nullable=False),
        sa.Column("alert_status", sa.String(length=10), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("flow", sa.String(length=128), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=True),
        sa.Column("guard_key", sa.Text(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("flow_run_state", sa.String(length=24), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index("ix_decisions_flow_run", ["flow_run_id"], unique=False)
        batch_op.create_index("ix_decisions_rule", ["rule", "id"], unique=False)

    op.create_table(
        "firing_alerts",
        sa.Column("incident", sa.String(length=120), nullable=False),
        sa.Column("alert", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("incident"),
    )
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("processed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_pending", ["processed", "id"], unique=False)

    op.create_table(
        "leases",
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("guard_key", sa.Text(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_digest"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_pending")

    op.drop_table("inbox")
    op.drop_table("firing_alerts")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_rule")
        batch_op.drop_index("ix_decisions_flow_run")

    op.drop_table("decisions")
    op.drop_table("alert_events")
