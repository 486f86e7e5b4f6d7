"""The engine loop: the single consumer of the inbox.

Each inbox row is handled in one store transaction: alert identities, decisions, guard leases
and the row's `processed` mark commit together, so a crash mid-row replays the whole row and
nothing is half-recorded. Admitted decisions go to dispatch only after that commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from responder import metrics
from responder.catalog import Catalog
from responder.decisions import Verdict, decide, fact_for
from responder.dispatch import Dispatcher
from responder.engine import Engine, EngineRejected, Match
from responder.events import CloudEvent, is_batch, parse_events
from responder.exceptions import StoreUnavailable, TemplateError
from responder.facts import Fact
from responder.guard import Guard
from responder.models import Alert, AlertmanagerWebhook
from responder.rules import RuleBook
from responder.store import ActiveRun, PendingMessage, Store

log = logging.getLogger(__name__)

MAX_CHAIN = 8


def _show(fact: Fact) -> str:
    fields = ",".join(f"{k}={v}" for k, v in sorted(fact.fields.items()))
    return f"{fact.name}{{{fields}}}"


class EngineLoop:
    """Reads the inbox in order, feeds the engine, asks the guard, hands off to dispatch."""

    def __init__(
        self,
        store: Store,
        guard: Guard,
        dispatcher: Dispatcher | None,
        book: RuleBook,
        catalog: Catalog,
        *,
        rule_vars: dict[str, str] | None = None,
        batch: int = 256,
        idle_seconds: float = 0.05,
        partitions: int = 16,
        event_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._guard = guard
        self._dispatcher = dispatcher
        self._rule_vars = rule_vars or {}
        self._batch = batch
        self._idle_seconds = idle_seconds
        self._partitions = partitions
        self._event_ttl = event_ttl
        self._clock = clock
        self.book = book
        self.catalog = catalog
        self.engine = Engine(book, partitions, clock)
        self.running = False
        self.wake = asyncio.Event()
        # Held while a step runs, so a reload never swaps the engine mid-row.
        self._lock = asyncio.Lock()

    async def use(self, book: RuleBook, catalog: Catalog) -> None:
        """Switch to new rules and catalog between two steps, rebuilding the engine."""
        async with self._lock:
            self.book, self.catalog = book, catalog
            await self.rebuild()

    async def rebuild(self) -> None:
        """Rebuild the engine's facts and alerts from the store; nothing is decided again."""
        self.engine = Engine(self.book, self._partitions, self._clock)
        for fact in self.catalog.facts(self._clock()):
            self.engine.assert_fact(fact)
        for fact in await self._store.live_facts(self._clock()):
            self.engine.assert_fact(fact)
        for alert in await self._store.firing():
            try:
                self.engine.assert_alert(alert)
            except EngineRejected:
                log.error("engine rejected held alert %s during rebuild", alert.incident)

    async def run(self) -> None:
        """Process the inbox until cancelled; a store failure rebuilds and retries.

        Call `rebuild` first: the engine must hold the store's facts before new ones arrive.
        """
        self.running = True
        try:
            while True:
                try:
                    if await self.step() == 0:
                        self.wake.clear()
                        try:
                            await asyncio.wait_for(self.wake.wait(), self._idle_seconds)
                        except TimeoutError:
                            pass
                except StoreUnavailable as exc:
                    metrics.ENGINE_ERRORS.labels(kind="store").inc()
                    log.error("engine loop: %s; rebuilding and retrying", exc)
                    await asyncio.sleep(1.0)
                    async with self._lock:
                        await self.rebuild()
        finally:
            self.running = False

    async def step(self) -> int:
        """Process due timers and up to one batch of inbox rows; return how many rows."""
        async with self._lock:
            await self._submit(await self._tick())
            messages = await self._store.pending(self._batch)
            for message in messages:
                await self._submit(await self._process(message))
            return len(messages)

    async def _submit(self, admitted: list[ActiveRun]) -> None:
        if self._dispatcher is not None:
            for run in admitted:
                await self._dispatcher.submit(run)

    async def _tick(self) -> list[ActiveRun]:
        """Expire facts, and decide for `firing_for` rules that came due."""
        due, expired = self.engine.tick()
        if not due and not expired:
            return []
        async with self._store.transaction() as conn:
            await self._store.delete_facts(conn, [f.id for f in expired])
            # A restart re-arms every timer: decide once per rule and incident.
            fresh = [
                m for m in due if not await self._store.decided(conn, m.rule.name, m.alert.incident)
            ]
            return await self._apply(conn, fresh, inbox_id=None)

    async def _process(self, message: PendingMessage) -> list[ActiveRun]:
        try:
            if message.source == "cloudevents":
                events = parse_events(message.body, is_batch(message.body))
                return await self._process_events(message.id, events)
            webhook = AlertmanagerWebhook.model_validate_json(message.body)
        except ValidationError as exc:
            # Intake validated it; this only happens if the schema changed underneath.
            metrics.ENGINE_ERRORS.labels(kind="bad_message").inc()
            log.error("inbox row %s no longer validates: %s", message.id, exc)
            async with self._store.transaction() as conn:
                await self._store.mark_processed(conn, message.id)
            return []
        admitted: list[ActiveRun] = []
        async with self._store.transaction() as conn:
            for alert in webhook.alerts:
                metrics.ALERTS_RECEIVED.labels(status=alert.status).inc()
                admitted.extend(await self._handle_alert(conn, alert, message.id))
            await self._store.mark_processed(conn, message.id)
        return admitted

    async def _process_events(self, inbox_id: int, events: list[CloudEvent]) -> list[ActiveRun]:
        """Assert each event as a fact; rules it completes decide for their alerts."""
        admitted: list[ActiveRun] = []
        expires_at = self._clock() + self._event_ttl
        async with self._store.transaction() as conn:
            for event in events:
                metrics.EVENTS_RECEIVED.inc()
                fact = event.fact(expires_at)
                await self._store.save_fact(conn, fact)
                admitted.extend(await self._apply(conn, self.engine.assert_fact(fact), inbox_id))
            await self._store.mark_processed(conn, inbox_id)
        return admitted

    async def _handle_alert(
        self, conn: AsyncConnection, alert: Alert, inbox_id: int
    ) -> list[ActiveRun]:
        if not await self._store.note_alert(conn, alert, inbox_id):
            first = await self._store.first_seen_in(conn, alert)
            await self._record(
                conn,
                alert,
                inbox_id,
                Verdict.DUPLICATE,
                f"{alert.status} alert already handled (inbox #{first})",
            )
            return []
        if alert.status == "resolved":
            matches = self.engine.retract_alert(alert)
            await self._store.set_firing(conn, alert, firing=False)
            await self._record(conn, alert, inbox_id, Verdict.RESOLVED, "fact retracted")
            return await self._apply(conn, matches, inbox_id)
        if await self._store.was_resolved(conn, alert):
            # A firing notice that arrives after the same incident resolved is stale.
            await self._record(
                conn, alert, inbox_id, Verdict.DUPLICATE, "incident already resolved"
            )
            return []
        try:
            matches = self.engine.assert_alert(alert)
        except EngineRejected:
            await self._record(
                conn, alert, inbox_id, Verdict.ERROR, "the rules engine rejected this alert"
            )
            return []
        await self._store.set_firing(conn, alert, firing=True)
        if not matches:
            await self._record(conn, alert, inbox_id, Verdict.UNMATCHED, "no rule matched")
            return []
        return await self._apply(conn, matches, inbox_id)

    async def _apply(
        self, conn: AsyncConnection, matches: list[Match], inbox_id: int | None, depth: int = 0
    ) -> list[ActiveRun]:
        """Act on matches in priority order: retract and assert facts, then decide.

        Asserting a fact can make more rules hold (forward chaining); those are applied
        in turn, up to `MAX_CHAIN` levels deep.
        """
        admitted: list[ActiveRun] = []
        for match in matches:
            rule, alert = match.rule, match.alert
            if not self.engine.still_holds(match):
                await self._record(
                    conn,
                    alert,
                    inbox_id,
                    Verdict.UNMATCHED,
                    "held, then a fact it requires or excludes changed",
                    rule=rule.name,
                )
                continue
            try:
                done = await self._change_facts(conn, match, inbox_id, depth)
            except TemplateError as exc:
                await self._record(conn, alert, inbox_id, Verdict.ERROR, str(exc), rule=rule.name)
                continue
            admitted.extend(done)
            if rule.run is None:
                continue
            try:
                decision = decide(match, self._rule_vars, self.catalog)
            except TemplateError as exc:
                await self._record(conn, alert, inbox_id, Verdict.ERROR, str(exc), rule=rule.name)
                continue
            admission = await self._guard.admit(conn, decision, inbox_id)
            metrics.DECISIONS.labels(
                verdict=admission.verdict, refusal=admission.refusal or ""
            ).inc()
            if admission.admitted:
                admitted.append(
                    ActiveRun(
                        decision_id=admission.decision_id,
                        flow_run_id=None,
                        flow=decision.flow,
                        rule=decision.rule,
                        guard_key=decision.key,
                        incident=alert.incident,
                        alertname=alert.alertname,
                        parameters=decision.parameters,
                    )
                )
        return admitted

    async def _change_facts(
        self, conn: AsyncConnection, match: Match, inbox_id: int | None, depth: int
    ) -> list[ActiveRun]:
        rule, alert = match.rule, match.alert
        notes: list[str] = []
        for condition in rule.retract:
            gone = self.engine.retract_facts(condition, alert)
            await self._store.delete_facts(conn, [f.id for f in gone])
            notes.extend(f"retracted {_show(f)}" for f in gone)
        chained: list[Match] = []
        if rule.assert_ is not None:
            fact = fact_for(match, self._rule_vars, self.catalog, self._clock())
            chained = self.engine.assert_fact(fact)
            await self._store.save_fact(conn, fact)
            notes.append(f"asserted {_show(fact)}")
        if rule.run is None:
            await self._record(
                conn,
                alert,
                inbox_id,
                Verdict.ASSERTED,
                "; ".join(notes) or "nothing to change",
                rule=rule.name,
            )
        if not chained:
            return []
        if depth >= MAX_CHAIN:
            metrics.ENGINE_ERRORS.labels(kind="chain_depth").inc()
            log.error("rule %s: forward chaining deeper than %d; stopped", rule.name, MAX_CHAIN)
            return []
        return await self._apply(conn, chained, inbox_id, depth + 1)

    async def _record(
        self,
        conn: AsyncConnection,
        alert: Alert,
        inbox_id: int | None,
        verdict: Verdict,
        reason: str,
        **extra: Any,
    ) -> None:
        metrics.DECISIONS.labels(verdict=verdict, refusal="").inc()
        await self._store.record_decision(
            conn,
            inbox_id=inbox_id,
            incident=alert.incident,
            alertname=alert.alertname,
            alert_status=alert.status,
            labels=dict(alert.labels),
            verdict=verdict.value,
            reason=reason,
            **extra,
        )
