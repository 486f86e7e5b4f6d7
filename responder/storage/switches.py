"""Operator switches that every replica obeys (the global pause), and admission locks."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.database import Database
from responder.storage.schema import control


class Switches:
    """The `control` table: named JSON values."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def value(self, conn: AsyncConnection, name: str) -> Any:
        """A switch's value; None when it is off. Through the driver (`Database.fetch`):
        the guard reads the pause in every engine transaction that admits."""
        rows = await self._db.fetch(conn, "SELECT value FROM control WHERE name = ?", [name])
        return self._db.json_value(rows[0][0]) if rows else None

    async def set(self, name: str, value: Any) -> None:
        """Set a switch (None turns it off)."""
        async with self._db.transaction() as conn:
            await conn.execute(delete(control).where(control.c.name == name))
            if value is not None:
                await conn.execute(
                    control.insert().values(name=name, value=value, updated_at=time.time())
                )

    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        """Hold a row lock on `name` until the transaction ends.

        Checks that count (budgets, blast radius) are otherwise racy: two transactions could
        both count N-1. Writing first also makes SQLite take its write lock before reading.
        One upsert: the conflict path locks the existing row.
        """
        now = time.time()
        await conn.execute(
            self._db.insert(control)
            .values(name=name, value={}, updated_at=now)
            .on_conflict_do_update(index_elements=[control.c.name], set_={"updated_at": now})
        )
