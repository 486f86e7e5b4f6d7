"""Facts asserted by rules, configuration or events, so the engine can rebuild them."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.events.facts import Fact
from responder.storage.database import Database
from responder.storage.schema import facts


class Facts:
    """The `facts` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    async def save(conn: AsyncConnection, fact: Fact) -> None:
        await conn.execute(delete(facts).where(facts.c.id == fact.id))
        await conn.execute(
            facts.insert().values(
                id=fact.id,
                name=fact.name,
                fields=dict(fact.fields),
                expires_at=fact.expires_at,
                source=fact.source,
            )
        )

    @staticmethod
    async def save_many(conn: AsyncConnection, held: list[Fact]) -> None:
        """Save facts in two statements (a fact already saved is replaced)."""
        if not held:
            return
        ids = [fact.id for fact in held]
        for start in range(0, len(ids), 500):
            await conn.execute(delete(facts).where(facts.c.id.in_(ids[start : start + 500])))
        rows = [
            {
                "id": fact.id,
                "name": fact.name,
                "fields": dict(fact.fields),
                "expires_at": fact.expires_at,
                "source": fact.source,
            }
            for fact in held
        ]
        await conn.execute(facts.insert(), rows)

    @staticmethod
    async def remove(conn: AsyncConnection, ids: list[str]) -> None:
        if ids:
            await conn.execute(delete(facts).where(facts.c.id.in_(ids)))

    async def live(self, now: float) -> list[Fact]:
        async with self._db.transaction() as conn:
            rows = await conn.execute(select(facts).where(facts.c.expires_at > now))
            return [Fact(r.name, r.fields, r.expires_at, r.source) for r in rows]
