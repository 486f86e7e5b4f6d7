"""Guard leases (the names active remediations hold) and cooldowns (keys refused a while).

Persistence only: when a name may be taken, renewed or freed is `control.leases`'s to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.database import Database, placeholders
from responder.storage.schema import cooldowns, key_digest, leases


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a guard name (a key or a mutex)."""

    name: str
    decision_id: int
    flow_run_id: str | None
    expires_at: float

    def gives_way(self, now: float) -> bool:
        """An expired lease whose decision has no flow run: admission ends it and takes its
        names (with a flow run, only the dispatcher, asking Prefect, may)."""
        return self.expires_at <= now and self.flow_run_id is None


class Leases:
    """The `leases` and `cooldowns` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def take(
        self, conn: AsyncConnection, names: list[str], decision_id: int, ttl: float, now: float
    ) -> list[str]:
        """Take every free one of `names`, in digest order (two admissions that want
        overlapping names cannot deadlock on PostgreSQL); the digests taken."""
        # One statement of every row, through the driver (`Database.fetch`): admissions in a
        # storm take names one decision at a time.
        rows = sorted((key_digest(name), name) for name in set(names))
        values = [(digest, name, decision_id, now, now + ttl) for digest, name in rows]
        marks = ", ".join(f"({placeholders(5)})" for _ in values)
        taken = await self._db.fetch(
            conn,
            "INSERT INTO leases (key_digest, name, decision_id, acquired_at, expires_at)"
            f" VALUES {marks} ON CONFLICT DO NOTHING RETURNING key_digest",
            [value for row in values for value in row],
        )
        return [digest for (digest,) in taken]

    @staticmethod
    async def drop(conn: AsyncConnection, digests: list[str]) -> None:
        """Free names by their digests."""
        if digests:
            await conn.execute(delete(leases).where(leases.c.key_digest.in_(digests)))

    @staticmethod
    async def expired_runless(conn: AsyncConnection, names: list[str], now: float) -> list[int]:
        """The decisions holding any of `names` under an expired lease, with no flow run."""
        digests = [key_digest(name) for name in set(names)]
        return list(
            await conn.scalars(
                select(leases.c.decision_id)
                .where(
                    leases.c.key_digest.in_(digests),
                    leases.c.expires_at <= now,
                    leases.c.flow_run_id.is_(None),
                )
                .distinct()
            )
        )

    async def holders(
        self, conn: AsyncConnection, names: list[str] | None, *, limit: int | None = None
    ) -> dict[str, LeaseHolder]:
        """The holders of those of `names` that are held (of every held name if None, at
        most `limit` of them), by name. Through the driver (`Database.fetch`): the guard
        reads them at most admissions."""
        query = "SELECT name, decision_id, flow_run_id, expires_at FROM leases"
        parameters: list[Any] = []
        if names is not None:
            parameters = [key_digest(n) for n in names]
            query += f" WHERE key_digest IN ({placeholders(len(parameters))})"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return {
            name: LeaseHolder(name, decision_id, flow_run_id, expires_at)
            for name, decision_id, flow_run_id, expires_at in await self._db.fetch(
                conn, query, parameters
            )
        }

    async def holder(self, conn: AsyncConnection, names: list[str]) -> LeaseHolder | None:
        """A holder of any of `names`, if there is one (an expired lease still holds until
        its decision is ended); the key's holder before a mutex's."""
        held = await self.holders(conn, names)
        return held[min(held)] if held else None  # `key:...` sorts before `mutex:...`

    @staticmethod
    async def release(conn: AsyncConnection, decision_id: int) -> None:
        """Free every name a decision holds (in the caller's transaction)."""
        await conn.execute(delete(leases).where(leases.c.decision_id == decision_id))

    async def renew(self, decision_ids: list[int], until: float) -> None:
        """Extend the leases of these decisions to `until`."""
        if decision_ids:
            async with self._db.transaction() as conn:
                await conn.execute(
                    update(leases)
                    .where(leases.c.decision_id.in_(decision_ids))
                    .values(expires_at=until)
                )

    async def expired(self, now: float) -> list[tuple[int, str | None]]:
        """Decisions whose leases all expired, with their flow run."""
        async with self._db.transaction() as conn:
            live = select(leases.c.decision_id).where(leases.c.expires_at > now)
            rows = await conn.execute(
                select(leases.c.decision_id, leases.c.flow_run_id)
                .where(leases.c.expires_at <= now, leases.c.decision_id.not_in(live))
                .distinct()
            )
            return [(r.decision_id, r.flow_run_id) for r in rows]

    async def count(self) -> int:
        async with self._db.transaction() as conn:
            return int(await conn.scalar(select(func.count()).select_from(leases)) or 0)

    @staticmethod
    async def live(conn: AsyncConnection, now: float) -> list[dict[str, Any]]:
        """Held names whose lease has not expired, oldest first, for operators."""
        held = await conn.execute(
            select(leases.c.name, leases.c.decision_id, leases.c.flow_run_id, leases.c.expires_at)
            .where(leases.c.expires_at > now)
            .order_by(leases.c.acquired_at)
        )
        return [dict(r._mapping) for r in held]

    # --- cooldowns ---------------------------------------------------------------------

    async def cooldown_until(self, conn: AsyncConnection, key: str, now: float) -> float | None:
        found = await self._db.fetch(
            conn,
            "SELECT until FROM cooldowns WHERE key_digest = ? AND until > ?",
            [key_digest(key), now],
        )
        return float(found[0][0]) if found else None

    @staticmethod
    async def cool(conn: AsyncConnection, key: str, until: float, decision_id: int) -> None:
        """Refuse `key` until `until` (the cooldown a run's end started)."""
        digest = key_digest(key)
        await conn.execute(delete(cooldowns).where(cooldowns.c.key_digest == digest))
        await conn.execute(
            cooldowns.insert().values(
                key_digest=digest, guard_key=key, until=until, decision_id=decision_id
            )
        )

    @staticmethod
    async def cooling(conn: AsyncConnection, now: float) -> list[dict[str, Any]]:
        """Live cooldowns, soonest over first, for operators."""
        rows = await conn.execute(
            select(cooldowns.c.guard_key, cooldowns.c.until, cooldowns.c.decision_id)
            .where(cooldowns.c.until > now)
            .order_by(cooldowns.c.until)
        )
        return [dict(r._mapping) for r in rows]
