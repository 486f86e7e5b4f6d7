"""One engine transaction's buffered writes: decisions, alert identities, firing alerts, facts
and incidents' states (written in the same transaction as the decisions that set them).

The decision pipeline works through it (it is the pipeline's `Transaction`); the engine loop
commits it, then announces the refusals and submits the runs the guard admitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from responder import metrics
from responder.control.guard import Admission, Guard
from responder.control.ledger import DecisionRecord, Ledger
from responder.control.runs import ActiveRun
from responder.decision.decisions import Decision, Verdict
from responder.decision.engine import Match
from responder.decision.escalation import NextAttempt
from responder.decision.event_rules import Absence
from responder.events.facts import Fact
from responder.events.manual_runs import MANUAL_RULE
from responder.events.webhook import Alert
from responder.storage.incidents import IncidentState
from responder.storage.schema import key_digest
from responder.storage.store import Store
from responder.storage.timers import ABSENCE, RETRY, SETTLE, schedule_row


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
        self._identities: list[tuple[str, str, str, int, float]] = []
        self._firing: dict[str, Alert | None] = {}
        self._incidents: dict[str, dict[str, Any]] = {}
        self._resolved: list[str] = []
        self._timers: list[dict[str, Any]] = []
        self._removed_facts: list[Fact] = []
        self._followed: list[tuple[str, str]] = []
        self._learned: set[tuple[str, str, str]] = set()  # identities read already
        self._saving: dict[str, Fact] = {}  # facts to save at the flush, by id

    def because(self, why: str | None) -> None:
        """Decisions recorded from now on were made again, for this reason (None: ends)."""
        self.ledger.because = why

    async def learn_identities(self, alerts: list[Alert]) -> None:
        """Read which of these identities were handled (those not read already)."""
        unknown = [a for a in alerts if a.identity not in self._learned]
        if unknown:
            self._learned.update(a.identity for a in unknown)
            self._seen.update(await self._store.alerts.known_identities(self.conn, unknown))

    def first_seen_in(self, alert: Alert) -> int | None:
        return self._seen.get(alert.identity)

    def was_resolved(self, alert: Alert) -> bool:
        return (alert.fingerprint, alert.started, "resolved") in self._seen

    def note(self, alert: Alert, inbox_id: int) -> None:
        self._seen[alert.identity] = inbox_id
        self._identities.append((*alert.identity, inbox_id, self._clock()))

    def set_firing(self, alert: Alert, *, firing: bool) -> None:
        # A firing incident no rule acts on has no record of its own (most alerts in a
        # storm): the firing alert is its record until a rule decides on it.
        self._firing[alert.incident] = alert if firing else None
        if not firing:
            self._incidents.pop(alert.incident, None)
            self._resolved.append(alert.incident)

    def _track(self, alert: Alert, state: IncidentState, **fields: Any) -> None:
        """An incident's state; of two in one transaction, the higher-ranking one stays."""
        known = self._incidents.get(alert.incident)
        if known is not None and IncidentState(known["state"]).rank > state.rank:
            return
        self._incidents[alert.incident] = {
            "incident": alert.incident,
            "alertname": alert.alertname,
            "firing": alert.status != "resolved",  # a rule on resolutions may act too
            "state": state.value,
            "due": False,
            "updated_at": self._clock(),
            **fields,
        }

    def _track_admission(self, admission: Admission, decision: Decision) -> None:
        alert, rule = decision.alert, decision.rule
        if rule == MANUAL_RULE or decision.from_event:
            return  # a run by hand, or on an event, is no incident: nothing fires
        if admission.admitted:
            self._track(alert, IncidentState.RUNNING, rule=rule, decision_id=admission.decision_id)
        elif admission.refusal == "max_attempts":
            self._track(
                alert,
                IncidentState.EXHAUSTED,
                rule=rule,
                decision_id=admission.entry,
                waiting_on="max_attempts",
            )
        elif admission.verdict is Verdict.REFUSED and admission.refusal is not None:
            block = admission.block
            self._track(
                alert,
                IncidentState.WAITING,
                rule=rule,
                decision_id=admission.entry,  # the refusal: its id is known once flushed
                waiting_on=admission.refusal,
                block=block,
                block_digest=None if block is None else key_digest(block),
                holder=admission.holder,
                until=admission.until,
            )

    def defer(self, match: Match, inbox_id: int | None, seconds: float) -> None:
        alert, rule = match.alert, match.rule.name
        until = self._clock() + seconds
        reason = f"the rule holds; it settles {seconds:g}s before deciding"
        self.record(alert, inbox_id, Verdict.DEFERRED, reason, rule=rule)
        self._track(alert, IncidentState.WAITING, rule=rule, waiting_on=SETTLE, until=until)
        self._timers.append(
            {
                "kind": SETTLE,
                "incident": alert.incident,
                "rule": rule,
                "due_at": until,
                "decision_id": None,
                "reason": f"re-examined: settled {seconds:g}s",
                "created_at": self._clock(),
            }
        )

    def try_again(self, attempt: NextAttempt) -> None:
        self._timers.append(
            {
                "kind": RETRY,
                "incident": attempt.incident,
                "rule": attempt.rule,
                "due_at": attempt.at,
                "decision_id": attempt.after,
                "reason": attempt.reason,
                "created_at": self._clock(),
            }
        )

    def await_follower(self, absence: Absence, inbox_id: int | None) -> None:
        """Set an absence timer (moved, if one waits for the same rule and key)."""
        due = absence.due
        reason = f"no follower came by {due:.0f}; waiting since inbox #{inbox_id}"
        self.record(
            absence.event.as_alert(),
            inbox_id,
            Verdict.DEFERRED,
            "the rule holds unless a follower comes within its not_followed_by window",
            rule=absence.rule,
        )
        self._timers.append(
            {
                "kind": ABSENCE,
                "incident": absence.key,
                "rule": absence.rule,
                "due_at": due,
                "decision_id": None,
                "reason": reason,
                "created_at": self._clock(),
                "payload": absence.event.model_dump_json(exclude_none=True),
            }
        )

    def schedule(self, rule: str, due: float) -> None:
        """Set a schedule rule's next tick."""
        self._timers.append(schedule_row(rule, due, self._clock()))

    def follower_came(self, pairs: list[tuple[str, str]]) -> None:
        """End the absence timers (rule, key) a follower answered (set in this transaction
        too)."""
        ended = set(pairs)
        self._timers = [
            t
            for t in self._timers
            if t["kind"] != ABSENCE or (t["rule"], t["incident"]) not in ended
        ]
        self._followed.extend(pairs)

    async def save_fact(self, fact: Fact) -> None:
        self._saving[fact.id] = fact  # saved in bulk by `flush`

    async def delete_facts(self, facts: list[Fact]) -> None:
        for fact in facts:
            self._saving.pop(fact.id, None)
        await self._store.facts.remove(self.conn, [f.id for f in facts])
        self._removed_facts.extend(facts)

    def take_removed_facts(self) -> list[Fact]:
        """The facts deleted since the last call (expired or retracted)."""
        removed, self._removed_facts = self._removed_facts, []
        return removed

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
        self._track_admission(admission, decision)
        return admission.refusal

    async def flush(self) -> None:
        if self._saving:
            await self._store.facts.save_many(self.conn, list(self._saving.values()))
            self._saving = {}
        await self.ledger.flush()
        if self._identities:
            await self._store.alerts.add_identities(self.conn, self._identities)
            self._identities = []
        if self._firing:
            await self._store.alerts.replace_firing(self.conn, self._firing)
            self._firing = {}
        if self._incidents:
            rows = list(self._incidents.values())
            for row in rows:
                if isinstance(row.get("decision_id"), DecisionRecord):
                    row["decision_id"] = row["decision_id"].id
            await self._store.incidents.save(self.conn, rows)
            self._incidents = {}
        if self._followed:
            await self._store.timers.cancel(self.conn, ABSENCE, self._followed)
            self._followed = []
        if self._timers:
            await self._store.timers.set(self.conn, self._timers)
            self._timers = []
        if self._resolved:
            await self._store.incidents.resolve(self.conn, self._resolved, self._clock())
            self._resolved = []
