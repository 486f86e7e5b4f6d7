"""The guard: admits a decision only when it is safe and not a duplicate.

Admission happens inside the caller's store transaction, together with the decision's audit
record, so two engine loops or two identical webhooks can never both admit one key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from responder.decisions import Decision, Verdict
from responder.store import Store


@dataclass(frozen=True)
class Admission:
    """The guard's answer. A refusal is a normal outcome, not an error."""

    admitted: bool
    reason: str
    decision_id: int


class Guard:
    """One active remediation per key, with an expiring lease."""

    def __init__(self, store: Store, lease_seconds: float) -> None:
        self._store = store
        self._lease_seconds = lease_seconds

    async def admit(self, conn: AsyncConnection, decision: Decision, inbox_id: int) -> Admission:
        """Take the decision's key or refuse; record the decision either way."""
        now = time.time()
        holder = await self._store.acquire_lease(conn, decision.key, self._lease_seconds, now)
        if holder is None:
            verdict, reason = Verdict.ADMITTED, "key free; lease taken"
        else:
            verdict = Verdict.REFUSED
            run = f" (flow run {holder.flow_run_id})" if holder.flow_run_id else ""
            reason = (
                f"key {decision.key!r} is active: held by decision {holder.decision_id}{run} "
                f"until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(holder.expires_at))}"
            )
        decision_id = await self._store.record_decision(
            conn,
            created_at=now,
            inbox_id=inbox_id,
            incident=decision.alert.incident,
            alertname=decision.alert.alertname,
            alert_status=decision.alert.status,
            labels=dict(decision.alert.labels),
            rule=decision.rule,
            flow=decision.flow,
            parameters=decision.parameters,
            guard_key=decision.key,
            verdict=verdict.value,
            reason=reason,
        )
        if holder is None:
            await self._store.bind_lease(conn, decision.key, decision_id)
        return Admission(holder is None, reason, decision_id)
