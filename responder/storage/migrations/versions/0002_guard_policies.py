"""guard policies

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Leases now hold names: `key:<guard key>` for keys, `mutex:<name>` for mutexes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op


def _rename_leases(rename: Callable[[str], str]) -> None:
    """Rewrite lease names, and their digests, so that active leases survive the upgrade."""
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT key_digest, name FROM leases")).all()
    for digest, name in rows:
        new = rename(name)
        connection.execute(
            sa.text(
                "UPDATE leases SET key_digest = :new_digest, name = :new WHERE key_digest = :old"
            ),
            {"new_digest": hashlib.sha256(new.encode()).hexdigest(), "new": new, "old": digest},
        )


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "cooldowns",
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("guard_key", sa.Text(), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_digest"),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refusal", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("policy", sa.JSON(), nullable=True))
        batch_op.create_index("ix_decisions_flow_created", ["flow", "created_at"], unique=False)
        batch_op.create_index("ix_decisions_incident", ["incident"], unique=False)

    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.alter_column("guard_key", new_column_name="name")
        batch_op.create_index(batch_op.f("ix_leases_decision_id"), ["decision_id"], unique=False)
    _rename_leases(lambda name: f"key:{name}")


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM leases WHERE name LIKE 'mutex:%'"))
    _rename_leases(lambda name: name.removeprefix("key:"))
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leases_decision_id"))
        batch_op.alter_column("name", new_column_name="guard_key")

    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_incident")
        batch_op.drop_index("ix_decisions_flow_created")
        batch_op.drop_column("policy")
        batch_op.drop_column("refusal")

    op.drop_table("cooldowns")
    op.drop_table("control")
