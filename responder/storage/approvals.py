"""Approvals: a run that asks a person waits; who answered, how and when.

A run's approval moves `awaiting` → `answering` (through Responder's API) → `approved` or
`rejected`; `unanswered` when the run ended while it waited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from responder.storage.database import Database
from responder.storage.schema import decisions

# A run's approval: waiting for a person; being answered through Responder's API; answered.
AWAITING, ANSWERING, APPROVED, REJECTED = "awaiting", "answering", "approved", "rejected"
UNANSWERED = "unanswered"  # the run ended while it waited (timed out, cancelled)
APPROVAL_STATES = frozenset({AWAITING, ANSWERING, APPROVED, REJECTED, UNANSWERED})


class ApprovalRecords:
    """The approval columns of `decisions`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set(
        self,
        flow_run_id: str,
        state: str,
        expected: tuple[str | None, ...],
        approval: dict[str, Any] | None = None,
    ) -> bool:
        """Move the approval of this flow run's decision to `state` if it is in `expected`;
        False when it is not (someone else answered first)."""
        if state not in APPROVAL_STATES:
            raise ValueError(f"not an approval state: {state!r}")
        current: ColumnElement[bool] = decisions.c.approval_state.in_(
            [s for s in expected if s is not None]
        )
        if None in expected:
            current = or_(current, decisions.c.approval_state.is_(None))
        values: dict[str, Any] = {"approval_state": state}
        if approval is not None:
            values["approval"] = approval
        async with self._db.transaction() as conn:
            result = await conn.execute(
                update(decisions)
                .where(decisions.c.flow_run_id == flow_run_id, current)
                .values(**values)
            )
            return bool(result.rowcount)

    async def awaiting(self) -> list[dict[str, Any]]:
        """Decisions whose run waits for a person's answer, oldest first."""
        query = (
            select(decisions)
            .where(
                decisions.c.approval_state.in_([AWAITING, ANSWERING]),
                decisions.c.finished_at.is_(None),
            )
            .order_by(decisions.c.id)
        )
        async with self._db.transaction() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]
