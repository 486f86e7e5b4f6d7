"""Alert identities (every handled fingerprint, start and status) and the firing alerts.

The identity ledger makes redelivered webhooks harmless; the firing alerts let the engine
rebuild its facts after a restart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.events.webhook import Alert
from responder.storage.database import Database
from responder.storage.schema import alert_events, firing_alerts


class Alerts:
    """The `alert_events` and `firing_alerts` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    async def known_identities(
        conn: AsyncConnection, alerts: list[Alert]
    ) -> dict[tuple[str, str, str], int]:
        """Every handled `(fingerprint, startsAt, status)` of these alerts' incidents."""
        # Two single-column INs (the key's columns) and the pairs compared here: an IN over
        # pairs costs SQLAlchemy far more to render. Filtering on the start too keeps a
        # flapping alert's long history out of the read.
        starts: dict[str, set[str]] = {}
        for alert in alerts:
            starts.setdefault(alert.fingerprint, set()).add(alert.started)
        fingerprints = sorted(starts)
        found: dict[tuple[str, str, str], int] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            rows = await conn.execute(
                select(
                    alert_events.c.fingerprint,
                    alert_events.c.starts_at,
                    alert_events.c.status,
                    alert_events.c.inbox_id,
                ).where(
                    alert_events.c.fingerprint.in_(chunk),
                    alert_events.c.starts_at.in_(sorted(set().union(*(starts[f] for f in chunk)))),
                )
            )
            for r in rows:
                if r.starts_at in starts[r.fingerprint]:
                    found[(r.fingerprint, r.starts_at, r.status)] = r.inbox_id
        return found

    async def add_identities(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Record handled identities; one already there (another replica's) is kept."""
        await conn.execute(self._db.insert(alert_events).on_conflict_do_nothing(), rows)

    async def replace_firing(self, conn: AsyncConnection, changes: dict[str, Alert | None]) -> None:
        """Apply a batch's changes to the firing alerts: an Alert holds it, None drops it."""
        gone = [incident for incident, alert in changes.items() if alert is None]
        for start in range(0, len(gone), 500):
            await conn.execute(
                delete(firing_alerts).where(firing_alerts.c.incident.in_(gone[start : start + 500]))
            )
        rows = [
            {"incident": incident, "alert": alert.model_dump_json(by_alias=True)}
            for incident, alert in changes.items()
            if alert is not None
        ]
        if rows:
            upsert = self._db.insert(firing_alerts)
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[firing_alerts.c.incident],
                    set_={"alert": upsert.excluded.alert},
                ),
                rows,
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
