"""Incidents: every firing incident's remediation state, kept so that a refused incident is
decided again when what refused it clears (level-triggered convergence).

Persistence only: which state an incident is in is written by the engine loop's transaction
(`runtime.work`), and when it is decided again is the loop's (`runtime.convergence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, delete, exists, false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.database import Database, placeholders
from responder.storage.schema import firing_alerts, incidents, leases


class IncidentState(StrEnum):
    """Where an incident's remediation stands, by rank: a later one in a transaction wins
    over an earlier one of lower rank."""

    UNMATCHED = "unmatched"  # no rule acts on it: none needed
    DONE = "done"  # its remediation ended (`outcome`)
    EXHAUSTED = "exhausted"  # refused by max_attempts: it stays refused
    WAITING = "waiting"  # refused, waiting for `waiting_on` to clear
    RUNNING = "running"  # admitted: `decision_id` holds its names

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {state: rank for rank, state in enumerate(IncidentState)}

# Refusals whose block clears when a guard name is free again.
HELD = ("key_active", "mutex_held")
# Refusals whose block clears at a time (`until`): a maintenance window's end too.
TIMED = ("cooldown", "budget", "maintenance")
# Most waiting incidents listed for operators.
WAITING_SHOWN = 100


@dataclass(frozen=True)
class DueIncident:
    """A waiting incident whose block may have cleared (or that a reload asks about)."""

    incident: str
    state: str
    waiting_on: str | None
    block: str | None
    holder: int | None
    until: float | None
    due: bool = False  # asked again whatever its block (the rules changed)


COLUMNS = (
    "incident",
    "alertname",
    "firing",
    "state",
    "rule",
    "decision_id",
    "waiting_on",
    "block",
    "block_digest",
    "holder",
    "until",
    "outcome",
    "due",
    "updated_at",
)


# `Incidents.save`, through the driver (`Database.write_many`): one upsert per transaction's
# incidents.
_SAVE = (
    f"INSERT INTO incidents ({', '.join(COLUMNS)}) VALUES ({placeholders(len(COLUMNS))})"
    " ON CONFLICT (incident) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "incident")
    + f" WHERE incidents.state != '{IncidentState.RUNNING.value}'"
    f" OR excluded.state = '{IncidentState.RUNNING.value}'"
)


class Incidents:
    """The `incidents` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Write incidents' states. A running incident is kept running until its decision
        ends (`finished`): another rule's refusal meanwhile does not make it wait."""
        await self._db.write_many(conn, _SAVE, [[row.get(c) for c in COLUMNS] for row in rows])

    async def resolve(self, conn: AsyncConnection, names: list[str], now: float) -> None:
        """These incidents resolved: never decided again. Through the driver
        (`Database.write_many`): the engine resolves incidents in most transactions."""
        await self._db.write_many(
            conn,
            "UPDATE incidents SET firing = ?, due = ?, updated_at = ? WHERE incident = ?",
            [(False, False, now, name) for name in names],
        )

    @staticmethod
    async def finished(conn: AsyncConnection, decision_id: int, outcome: str, now: float) -> None:
        """The running decision ended: its incident is done, and incidents refused for the
        blast radius may fit now."""
        await conn.execute(
            update(incidents)
            .where(
                incidents.c.decision_id == decision_id,
                incidents.c.state == IncidentState.RUNNING.value,
            )
            .values(state=IncidentState.DONE.value, outcome=outcome, updated_at=now)
        )
        await conn.execute(
            update(incidents)
            .where(
                incidents.c.firing == true(),
                incidents.c.state == IncidentState.WAITING.value,
                incidents.c.waiting_on == "max_active",
            )
            .values(due=True)
        )

    async def record_unmatched(
        self, conn: AsyncConnection, firing: list[tuple[str, str]], now: float
    ) -> None:
        """Give these firing incidents (incident, alertname) a record, `unmatched`, unless
        they have one: an incident no rule acted on has none until it is to be asked again."""
        upsert = self._db.insert(incidents)
        rows = [
            {
                "incident": incident,
                "alertname": alertname,
                "firing": True,
                "state": IncidentState.UNMATCHED.value,
                "due": False,
                "updated_at": now,
            }
            for incident, alertname in firing
        ]
        for start in range(0, len(rows), 500):
            await conn.execute(
                upsert.on_conflict_do_nothing(index_elements=[incidents.c.incident]),
                rows[start : start + 500],
            )

    @staticmethod
    async def ask_again(conn: AsyncConnection, states: list[IncidentState]) -> int:
        """Mark every firing incident in `states` due (the rules changed); how many."""
        result = await conn.execute(
            update(incidents)
            .where(
                incidents.c.firing == true(),
                incidents.c.state.in_([s.value for s in states]),
            )
            .values(due=True)
        )
        return int(result.rowcount or 0)

    @staticmethod
    async def ask_again_waiting_on(conn: AsyncConnection, refusal: str) -> None:
        """Mark every firing incident waiting on `refusal` due (e.g. a maintenance window
        was removed: the incidents it refused need not wait for its end)."""
        await conn.execute(
            update(incidents)
            .where(
                incidents.c.firing == true(),
                incidents.c.state == IncidentState.WAITING.value,
                incidents.c.waiting_on == refusal,
            )
            .values(due=True)
        )

    @staticmethod
    async def next_until(conn: AsyncConnection) -> float | None:
        """When the earliest timed block (a cooldown, a budget window) of a waiting incident
        ends; None when no incident waits on time. It is due once the time is past."""
        until = (
            await conn.execute(
                select(func.min(incidents.c.until)).where(
                    incidents.c.firing == true(),
                    incidents.c.state == IncidentState.WAITING.value,
                    incidents.c.waiting_on.in_(TIMED),
                )
            )
        ).scalar_one()
        return None if until is None else float(until)

    @staticmethod
    async def due(
        conn: AsyncConnection, now: float, *, paused: bool, limit: int
    ) -> list[DueIncident]:
        """Firing incidents to decide again, oldest first: marked due, or waiting on a
        guard name no longer held, on a time now past (strictly: a budget still counts the
        start that is exactly its window old), or on a pause now lifted."""
        free = ~exists().where(leases.c.key_digest == incidents.c.block_digest)
        waiting = and_(
            incidents.c.state == IncidentState.WAITING.value,
            or_(
                and_(incidents.c.waiting_on.in_(HELD), free),
                and_(incidents.c.waiting_on.in_(TIMED), incidents.c.until < now),
                and_(incidents.c.waiting_on == "paused", false() if paused else true()),
            ),
        )
        rows = await conn.execute(
            select(
                incidents.c.incident,
                incidents.c.state,
                incidents.c.waiting_on,
                incidents.c.block,
                incidents.c.holder,
                incidents.c.until,
                incidents.c.due,
            )
            .where(incidents.c.firing == true(), or_(incidents.c.due == true(), waiting))
            .order_by(incidents.c.updated_at, incidents.c.decision_id, incidents.c.incident)
            .limit(limit)
        )
        return [DueIncident(**r._mapping) for r in rows]

    @staticmethod
    async def held_by(conn: AsyncConnection, incident: str, decision_id: int) -> None:
        """The name an incident waits for was taken again, by `decision_id`."""
        await conn.execute(
            update(incidents).where(incidents.c.incident == incident).values(holder=decision_id)
        )

    @staticmethod
    async def cools_until(conn: AsyncConnection, incident: str, until: float) -> None:
        """The key an incident waits for is free, but cools down until `until`."""
        await conn.execute(
            update(incidents)
            .where(incidents.c.incident == incident)
            .values(waiting_on="cooldown", block=None, block_digest=None, until=until)
        )

    @staticmethod
    async def settle(conn: AsyncConnection, names: list[str], now: float) -> None:
        """These are being decided again: until new decisions take their place, waiting
        ones need none for now (others keep their state: done stays done)."""
        waiting = incidents.c.state == IncidentState.WAITING.value
        for start in range(0, len(names), 500):
            await conn.execute(
                update(incidents)
                .where(incidents.c.incident.in_(names[start : start + 500]))
                .values(
                    state=case((waiting, IncidentState.UNMATCHED.value), else_=incidents.c.state),
                    due=False,
                    waiting_on=None,
                    block=None,
                    block_digest=None,
                    holder=None,
                    until=None,
                    updated_at=now,
                )
            )

    async def forget_resolved(self, before: float) -> int:
        """Delete the records of incidents that resolved before `before`; how many (their
        decisions stay in the decision log)."""
        async with self._db.transaction() as conn:
            result = await conn.execute(
                delete(incidents).where(
                    incidents.c.firing == false(), incidents.c.updated_at < before
                )
            )
            return int(result.rowcount or 0)

    async def counts(self) -> dict[str, int]:
        """Firing incidents by state, and how many resolved. Unmatched ones are the firing
        alerts without a record in another state (most have no record at all)."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(incidents.c.firing, incidents.c.state, func.count()).group_by(
                    incidents.c.firing, incidents.c.state
                )
            )
            firing = await conn.execute(select(func.count()).select_from(firing_alerts))
            counts = {state.value: 0 for state in IncidentState} | {"resolved": 0}
            for is_firing, state, count in rows:
                key = state if is_firing else "resolved"
                counts[key] = counts.get(key, 0) + int(count)
            recorded = sum(counts[s.value] for s in IncidentState if s != IncidentState.UNMATCHED)
            counts[IncidentState.UNMATCHED.value] = max(0, int(firing.scalar_one()) - recorded)
            return counts

    async def waiting(self, limit: int = WAITING_SHOWN) -> list[dict[str, Any]]:
        """Firing incidents waiting, longest waiting first (at most `limit`)."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(
                    incidents.c.incident,
                    incidents.c.alertname,
                    incidents.c.rule,
                    incidents.c.waiting_on,
                    incidents.c.block,
                    incidents.c.holder,
                    incidents.c.until,
                    incidents.c.updated_at,
                )
                .where(
                    incidents.c.firing == true(),
                    incidents.c.state == IncidentState.WAITING.value,
                )
                .order_by(incidents.c.updated_at)
                .limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    async def every(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every incident's record, resolved ones too (a sandbox's, for rule tests)."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(select(incidents).order_by(incidents.c.incident).limit(limit))
            return [dict(r._mapping) for r in rows]

    async def like(self, fingerprint: str) -> list[dict[str, Any]]:
        """The records of every incident of one fingerprint, newest first."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(incidents)
                .where(incidents.c.incident.like(f"{fingerprint}@%"))
                .order_by(incidents.c.updated_at.desc())
                .limit(20)
            )
            return [dict(r._mapping) for r in rows]
