"""One engine transaction's buffered writes: decisions, alert identities, firing alerts, facts.

The decision pipeline works through it (it is the pipeline's `Transaction`); the engine loop
commits it, then announces the refusals and submits the runs the guard admitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from responder import metrics
from responder.control.guard import Admission, Guard
from responder.control.ledger import Ledger
from responder.control.runs import ActiveRun
from responder.decision.decisions import Decision, Verdict
from responder.events.facts import Fact
from responder.events.webhook import Alert
from responder.storage.store import Store


class Work:
    """One transaction's buffered writes.

    Identities of a whole batch are read in one query and written in one; decisions go to
    the transaction's ledger, which writes them in bulk and in order.
    """

    def __init__(
        self, store: Store, guard: Guard, conn: AsyncConnection, clock: Callable[[], float]
    ) -> None:
        # Refused decisions, announced as Prefect events once the transaction commits.
        self.refused: list[tuple[Admission, Decision]] = []
        # Admitted decisions, dispatched once the transaction commits.
        self.admitted: list[ActiveRun] = []
        self._store = store
        self.conn = conn
        self._clock = clock
        self.ledger = Ledger(store, conn)
        self.guard = guard.within(conn, self.ledger)
        self._seen: dict[tuple[str, str, str], int] = {}
        self._identities: list[dict[str, Any]] = []
        self._firing: dict[str, Alert | None] = {}

    async def learn_identities(self, alerts: list[Alert]) -> None:
        self._seen.update(await self._store.alerts.known_identities(self.conn, alerts))

    def first_seen_in(self, alert: Alert) -> int | None:
        return self._seen.get(_identity(alert))

    def was_resolved(self, alert: Alert) -> bool:
        return (alert.fingerprint, alert.starts_at.isoformat(), "resolved") in self._seen

    def note(self, alert: Alert, inbox_id: int) -> None:
        identity = _identity(alert)
        self._seen[identity] = inbox_id
        self._identities.append(
            {
                "fingerprint": identity[0],
                "starts_at": identity[1],
                "status": identity[2],
                "inbox_id": inbox_id,
                "seen_at": self._clock(),
            }
        )

    def set_firing(self, alert: Alert, *, firing: bool) -> None:
        self._firing[alert.incident] = alert if firing else None

    async def save_fact(self, fact: Fact) -> None:
        await self._store.facts.save(self.conn, fact)

    async def delete_facts(self, facts: list[Fact]) -> None:
        await self._store.facts.remove(self.conn, [f.id for f in facts])

    def record(
        self,
        alert: Alert,
        inbox_id: int | None,
        verdict: Verdict,
        reason: str,
        rule: str | None = None,
    ) -> None:
        metrics.count_decision(verdict)
        self.ledger.add(
            created_at=self._clock(),
            inbox_id=inbox_id,
            incident=alert.incident,
            alertname=alert.alertname,
            alert_status=alert.status,
            labels=dict(alert.labels),
            rule=rule,
            verdict=verdict.value,
            reason=reason,
        )

    async def admit(self, decision: Decision, inbox_id: int | None) -> str | None:
        """Put a decision to the guard; an admitted one becomes a run to dispatch."""
        admission = await self.guard.admit(decision, inbox_id)
        metrics.count_decision(admission.verdict, admission.refusal)
        if admission.verdict is Verdict.REFUSED and admission.refusal is not None:
            self.refused.append((admission, decision))
        if admission.admitted:
            self.admitted.append(ActiveRun.admitted(admission.decision_id, decision))
        return admission.refusal

    async def flush(self) -> None:
        await self.ledger.flush()
        if self._identities:
            await self._store.alerts.add_identities(self.conn, self._identities)
            self._identities = []
        if self._firing:
            await self._store.alerts.replace_firing(self.conn, self._firing)
            self._firing = {}


def _identity(alert: Alert) -> tuple[str, str, str]:
    return (alert.fingerprint, alert.starts_at.isoformat(), alert.status)
