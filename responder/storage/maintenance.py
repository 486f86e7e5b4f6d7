"""Maintenance windows added through the API or the CLI, kept so that they outlive a restart.

Persistence only: what a window is and whom it covers is `decision.maintenance`'s; the guard
reads the windows once per engine transaction (`windows`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.database import Database
from responder.storage.schema import maintenance_windows

# Most windows kept; one more is refused.
MAX_STORED = 1000


class MaintenanceWindows:
    """The `maintenance_windows` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, name: str, spec: dict[str, Any], by: str, now: float) -> str | None:
        """Keep a window; None, or why not (the name is taken, or too many are kept)."""
        async with self._db.transaction() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(maintenance_windows))
            ).scalar_one()
            if int(count) >= MAX_STORED:
                return f"{MAX_STORED} maintenance windows are kept already; remove some first"
            result = await conn.execute(
                self._db.insert(maintenance_windows)
                .values(name=name, spec=spec, created_by=by[:200], created_at=now)
                .on_conflict_do_nothing(index_elements=[maintenance_windows.c.name])
            )
            if not result.rowcount:
                return f"a maintenance window named {name!r} exists already"
        return None

    async def remove(self, name: str) -> bool:
        """Forget a window; whether there was one by that name."""
        async with self._db.transaction() as conn:
            result = await conn.execute(
                delete(maintenance_windows).where(maintenance_windows.c.name == name)
            )
            return bool(result.rowcount)

    async def listed(self) -> list[dict[str, Any]]:
        """Every kept window with who added it and when, by name."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(maintenance_windows).order_by(maintenance_windows.c.name)
            )
            return [dict(r._mapping) for r in rows]

    async def windows(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        """Every kept window's spec, in the caller's transaction. Through the driver
        (`Database.fetch`): the guard reads them in every engine transaction that admits."""
        rows = await self._db.fetch(conn, "SELECT spec FROM maintenance_windows ORDER BY name", ())
        return [dict(self._db.json_value(spec)) for (spec,) in rows]
