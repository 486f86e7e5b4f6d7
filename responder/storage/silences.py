"""Alertmanager silences set while a remediation runs, lifted once it has ended."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from responder.storage.database import Database
from responder.storage.schema import decisions


@dataclass(frozen=True)
class LiftableSilence:
    """A silence Responder set in Alertmanager for a remediation (to extend while it runs,
    to lift once it has ended)."""

    decision_id: int
    silence_id: str


class Silences:
    """The silence columns of `decisions`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set(self, decision_id: int, silence_id: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                update(decisions).where(decisions.c.id == decision_id).values(silence_id=silence_id)
            )

    async def of_running(self, decision_ids: list[int]) -> list[LiftableSilence]:
        """The silences of these decisions that are set and not lifted, while they run."""
        if not decision_ids:
            return []
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(decisions.c.id, decisions.c.silence_id).where(
                    decisions.c.id.in_(decision_ids),
                    decisions.c.silence_id.is_not(None),
                    decisions.c.finished_at.is_(None),
                    decisions.c.silence_lifted.is_(False),
                )
            )
            return [LiftableSilence(r.id, r.silence_id) for r in rows]

    async def to_lift(self) -> list[LiftableSilence]:
        """Silences of remediations that ended, not yet lifted."""
        async with self._db.transaction() as conn:
            rows = await conn.execute(
                select(decisions.c.id, decisions.c.silence_id).where(
                    decisions.c.silence_id.is_not(None),
                    decisions.c.finished_at.is_not(None),
                    decisions.c.silence_lifted.is_(False),
                )
            )
            return [LiftableSilence(r.id, r.silence_id) for r in rows]

    async def lifted(self, decision_id: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                update(decisions).where(decisions.c.id == decision_id).values(silence_lifted=True)
            )
