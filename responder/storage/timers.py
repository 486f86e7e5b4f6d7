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


class Timers:
    """The `timers` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Set timers (kind, incident, rule, due_at, decision_id, reason, created_at); one
        of the same kind, incident and rule already set is moved to the new time."""
        if not rows:
            return
        upsert = self._db.insert(timers)
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[timers.c.kind, timers.c.incident, timers.c.rule],
                set_={
                    c: getattr(upsert.excluded, c)
                    for c in ("due_at", "decision_id", "reason", "created_at")
                },
            ),
            rows,
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
            )
            .where(timers.c.due_at <= now)
            .order_by(timers.c.due_at, timers.c.id)
            .limit(limit)
        )
        return [Timer(**r._mapping) for r in rows]

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
