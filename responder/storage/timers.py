"""Timers: what is to happen at a time, as rows, so that it happens after a restart, a reload
or a leader change as well.

Persistence only: which timers are set is the decision pipeline's (`decision.escalation`, in
the engine loop's transaction), and what a due timer does is convergence's
(`runtime.convergence`). A timer is taken (deleted) in the transaction that acts on it, so it
fires once: a crash before the commit leaves it due for the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.database import Database
from responder.storage.schema import timers

# The next attempt of a rule for an incident, after a run ended.
RETRY = "retry"
# The end of a rule's `settle` wait for an incident: it decides then, if it still holds.
SETTLE = "settle"
# An event rule's `not_followed_by`: `incident` is the first event's `same` key, `payload`
# the first event; it fires unless the follower came (and ended it).
ABSENCE = "absence"
# A schedule rule's next tick (`incident` is "schedule").
SCHEDULE = "schedule"


def schedule_row(rule: str, due: float, now: float) -> dict[str, Any]:
    """The row of a schedule rule's next tick."""
    return {
        "kind": SCHEDULE,
        "incident": SCHEDULE,
        "rule": rule,
        "due_at": due,
        "decision_id": None,
        "reason": "re-examined: schedule tick",
        "created_at": now,
        "payload": None,
    }


@dataclass(frozen=True)
class Timer:
    """One timer: `kind` of thing to do for `rule` and `incident` at `due_at`."""

    id: int
    kind: str
    incident: str
    rule: str
    due_at: float
    decision_id: int | None
    reason: str
    payload: str | None = None


class Timers:
    """The `timers` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Set timers (kind, incident, rule, due_at, decision_id, reason, created_at); one
        of the same kind, incident and rule already set is moved to the new time."""
        if not rows:
            return
        rows = [{"payload": None, **row} for row in rows]
        upsert = self._db.insert(timers)
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[timers.c.kind, timers.c.incident, timers.c.rule],
                set_={
                    c: getattr(upsert.excluded, c)
                    for c in ("due_at", "decision_id", "reason", "created_at", "payload")
                },
            ),
            rows,
        )

    async def arm(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Set timers that are not set yet (a schedule's next tick); one set stays as is."""
        if rows:
            insert = self._db.insert(timers)
            await conn.execute(
                insert.on_conflict_do_nothing(
                    index_elements=[timers.c.kind, timers.c.incident, timers.c.rule]
                ),
                rows,
            )

    @staticmethod
    async def cancel(conn: AsyncConnection, kind: str, pairs: list[tuple[str, str]]) -> None:
        """Drop the timers of `kind` for these (rule, incident) pairs (an absence ended)."""
        for rule, incident in pairs:
            await conn.execute(
                delete(timers).where(
                    timers.c.kind == kind, timers.c.rule == rule, timers.c.incident == incident
                )
            )

    @staticmethod
    async def due(conn: AsyncConnection, now: float, limit: int) -> list[Timer]:
        """Timers whose time has come, earliest first."""
        rows = await conn.execute(
            select(
                timers.c.id,
                timers.c.kind,
                timers.c.incident,
                timers.c.rule,
                timers.c.due_at,
                timers.c.decision_id,
                timers.c.reason,
                timers.c.payload,
            )
            .where(timers.c.due_at <= now)
            .order_by(timers.c.due_at, timers.c.id)
            .limit(limit)
        )
        return [Timer(**r._mapping) for r in rows]

    @staticmethod
    async def next_due(conn: AsyncConnection) -> float | None:
        """When the earliest timer is due; None when none is set."""
        due = (await conn.execute(select(func.min(timers.c.due_at)))).scalar_one()
        return None if due is None else float(due)

    @staticmethod
    async def take(conn: AsyncConnection, ids: list[int]) -> None:
        """These timers fired (or no longer apply)."""
        for start in range(0, len(ids), 500):
            await conn.execute(delete(timers).where(timers.c.id.in_(ids[start : start + 500])))

    async def of(self, incident_like: str) -> list[dict[str, Any]]:
        """The timers set for the incidents of one fingerprint (`fingerprint@%`)."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(timers)
                .where(timers.c.incident.like(incident_like))
                .order_by(timers.c.due_at)
                .limit(20)
            )
            return [dict(r._mapping) for r in rows]

    async def count(self) -> int:
        async with self._db.transaction() as conn:
            return int((await conn.execute(select(func.count()).select_from(timers))).scalar_one())
