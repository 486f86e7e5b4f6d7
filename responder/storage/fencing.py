"""What a running flow needs to know before it acts: where its decision stands now.

Persistence only: whether the run may act is `control.fencing`'s to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from responder.storage.database import Database
from responder.storage.schema import decisions, firing_alerts, leases


@dataclass(frozen=True)
class Standing:
    """A decision as its run's fencing check sees it, read in one transaction."""

    decision_id: int
    verdict: str
    rule: str | None
    flow_run_id: str | None
    finished_at: float | None
    flow_run_state: str | None
    policy: dict[str, Any] | None
    guard_key: str | None
    held: frozenset[str]  # the guard names (`key:…`, `mutex:…`) the decision holds now
    firing: bool  # its incident is among the firing alerts


class Fencing:
    """Reads across `decisions`, `leases` and `firing_alerts` for one decision."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def standing(self, decision_id: int) -> Standing | None:
        """Where the decision stands; None when there is no such decision."""
        async with self._db.transaction() as conn:
            row = (
                await conn.execute(
                    select(
                        decisions.c.verdict,
                        decisions.c.rule,
                        decisions.c.guard_key,
                        decisions.c.incident,
                        decisions.c.flow_run_id,
                        decisions.c.finished_at,
                        decisions.c.flow_run_state,
                        decisions.c.policy,
                    ).where(decisions.c.id == decision_id)
                )
            ).first()
            if row is None:
                return None
            held = await conn.scalars(
                select(leases.c.name).where(leases.c.decision_id == decision_id)
            )
            firing = await conn.scalar(
                select(firing_alerts.c.incident).where(firing_alerts.c.incident == row.incident)
            )
        return Standing(
            decision_id=decision_id,
            verdict=row.verdict,
            rule=row.rule,
            flow_run_id=row.flow_run_id,
            finished_at=row.finished_at,
            flow_run_state=row.flow_run_state,
            policy=row.policy,
            guard_key=row.guard_key,
            held=frozenset(held),
            firing=firing is not None,
        )
