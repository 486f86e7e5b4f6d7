"""The global pause: while it is on, every replica refuses new remediations (refusal `paused`)
and the dispatcher creates no flow run, not even for decisions it admitted before.

The switch is one row of the store's `control` table; `Pause` is its value, written by
`pause` and read by `paused`, nowhere else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.store import Store

PAUSE = "pause"  # the switch's name


@dataclass(frozen=True)
class Pause:
    """Who paused remediation, why and when."""

    reason: str
    by: str | None = None  # the operator the credentials name
    at: float | None = None
    declared_by: str | None = None  # the `by` the request declared, when another

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"reason": self.reason}
        for name in ("by", "at", "declared_by"):
            if getattr(self, name) is not None:
                value[name] = getattr(self, name)
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Pause:
        return cls(
            reason=str(value.get("reason") or ""),
            by=value.get("by"),
            at=value.get("at"),
            declared_by=value.get("declared_by"),
        )


class Wanted(Enum):
    """Whether an admitted decision should still get its flow run."""

    NO = "no"  # it ended (expired, finished) or holds no name any more
    PAUSED = "paused"  # not while the pause is on: try again later
    YES = "yes"


async def pause(store: Store, reason: str, by: str, *, declared_by: str | None = None) -> Pause:
    """Turn the pause on (or replace who paused and why)."""
    value = Pause(reason, by, time.time(), declared_by if declared_by not in ("", by) else None)
    await store.switches.set(PAUSE, value.to_json())
    return value


async def resume(store: Store) -> None:
    """Turn the pause off."""
    await store.switches.set(PAUSE, None)


async def paused(store: Store, conn: AsyncConnection) -> Pause | None:
    """The pause, in the caller's transaction; None when remediation is not paused."""
    value = await store.switches.value(conn, PAUSE)
    return Pause.from_json(value) if value else None


async def wanted(store: Store, decision_id: int) -> Wanted:
    """Whether an admitted decision should still get its flow run (asked before each try)."""
    async with store.transaction() as conn:
        if not await store.decisions.awaits_run(conn, decision_id):
            return Wanted.NO
        return Wanted.PAUSED if await paused(store, conn) else Wanted.YES
