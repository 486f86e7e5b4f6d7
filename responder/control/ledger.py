"""The decision ledger of one store transaction.

Every alert gets a decision record. Most need no id until the transaction ends, so they are
buffered and written in bulk; a decision that must hold guard leases needs its id at once,
and takes it after everything buffered before it, so ids follow the order decisions were made.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.store import Store

# The columns a decision is recorded with; the ones a record leaves out are NULL.
COLUMNS = (
    "created_at",
    "inbox_id",
    "incident",
    "alertname",
    "alert_status",
    "labels",
    "rule",
    "flow",
    "service",
    "parameters",
    "guard_key",
    "verdict",
    "refusal",
    "reason",
    "policy",
)


class DecisionRecord:
    """A recorded decision; its id is known once the ledger has written it."""

    __slots__ = ("_id",)

    def __init__(self) -> None:
        self._id: int | None = None

    @property
    def id(self) -> int:
        if self._id is None:
            raise RuntimeError("the decision is not written yet: flush the ledger first")
        return self._id


class Ledger:
    """Decisions recorded in one transaction, written in bulk and in order."""

    def __init__(self, store: Store, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn
        self._rows: list[dict[str, Any]] = []
        self._entries: list[DecisionRecord] = []

    def add(self, **values: Any) -> DecisionRecord:
        """Record a decision; it is written at the next flush (or the next `insert`)."""
        unknown = values.keys() - COLUMNS
        if unknown:
            raise TypeError(f"not decision columns: {sorted(unknown)}")
        entry = DecisionRecord()
        self._rows.append({column: values.get(column) for column in COLUMNS})
        self._entries.append(entry)
        return entry

    async def insert(self, **values: Any) -> int:
        """Record a decision and write it now, after every one buffered; return its id."""
        entry = self.add(**values)
        await self.flush()
        return entry.id

    async def flush(self) -> None:
        if not self._rows:
            return
        ids = await self._store.decisions.record(self._conn, self._rows)
        for entry, decision_id in zip(self._entries, ids, strict=True):
            entry._id = decision_id
        self._rows, self._entries = [], []
