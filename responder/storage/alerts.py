"""Alert identities (every handled fingerprint, start and status) and the firing alerts.

The identity ledger makes redelivered webhooks harmless; the firing alerts let the engine
rebuild its facts after a restart.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.events.webhook import Alert
from responder.storage.database import Database, placeholders
from responder.storage.schema import firing_alerts


class Alerts:
    """The `alert_events` and `firing_alerts` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def known_identities(
        self, conn: AsyncConnection, alerts: list[Alert]
    ) -> dict[tuple[str, str, str], int]:
        """Every handled `(fingerprint, startsAt, status)` of these alerts' incidents."""
        # Two single-column INs (the key's columns) and the pairs compared here. Filtering on
        # the start too keeps a flapping alert's long history out of the read.
        starts: dict[str, set[str]] = {}
        for alert in alerts:
            starts.setdefault(alert.fingerprint, set()).add(alert.started)
        fingerprints = sorted(starts)
        found: dict[tuple[str, str, str], int] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            times = sorted(set().union(*(starts[f] for f in chunk)))
            rows = await self._db.fetch(
                conn,
                "SELECT fingerprint, starts_at, status, inbox_id FROM alert_events"
                f" WHERE fingerprint IN ({placeholders(len(chunk))})"
                f" AND starts_at IN ({placeholders(len(times))})",
                [*chunk, *times],
            )
            for fingerprint, starts_at, status, inbox_id in rows:
                if starts_at in starts[fingerprint]:
                    found[(fingerprint, starts_at, status)] = inbox_id
        return found

    async def add_identities(
        self, conn: AsyncConnection, rows: list[tuple[str, str, str, int, float]]
    ) -> None:
        """Record handled identities, each `(fingerprint, startsAt, status, inbox_id,
        seen_at)`; one already there (another replica's) is kept."""
        await self._db.write_many(
            conn,
            "INSERT INTO alert_events (fingerprint, starts_at, status, inbox_id, seen_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            rows,
        )

    async def replace_firing(self, conn: AsyncConnection, changes: dict[str, Alert | None]) -> None:
        """Apply a batch's changes to the firing alerts: an Alert holds it, None drops it."""
        gone = [incident for incident, alert in changes.items() if alert is None]
        for start in range(0, len(gone), 500):
            chunk = gone[start : start + 500]
            sql = f"DELETE FROM firing_alerts WHERE incident IN ({placeholders(len(chunk))})"
            await self._db.write_many(conn, sql, [chunk])
        await self._db.write_many(
            conn,
            "INSERT INTO firing_alerts (incident, alert) VALUES (?, ?)"
            " ON CONFLICT (incident) DO UPDATE SET alert = excluded.alert",
            [
                (incident, alert.model_dump_json(by_alias=True))
                for incident, alert in changes.items()
                if alert is not None
            ],
        )

    async def firing_alert(self, incident: str) -> Alert | None:
        """The firing alert of this incident, as last received; None once it resolved."""
        async with self._db.transaction() as conn:
            row = (
                await conn.execute(
                    select(firing_alerts.c.alert).where(firing_alerts.c.incident == incident)
                )
            ).first()
        return None if row is None else Alert.model_validate_json(row.alert)

    async def firing(self) -> list[Alert]:
        async with self._db.transaction() as conn:
            rows = await conn.execute(select(firing_alerts.c.alert))
            return [Alert.model_validate_json(r.alert) for r in rows]
