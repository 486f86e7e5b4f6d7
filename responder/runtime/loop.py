"""The engine loop: the single consumer of the inbox.

The engine's work is committed in short store transactions, each bounded by alerts (or
events) and by time: alert identities, decisions, guard leases and each row's progress (how
many of its items are handled, then its `processed` mark) commit together, so a crash replays
exactly the items not yet committed and nothing is half-recorded or decided twice. A webhook
of thousands of alerts thus spans several transactions, and the inbox's commits (intake)
never wait for more than one of them. Admitted decisions go to dispatch only after the commit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from responder import metrics
from responder.control.guard import Admission, Guard
from responder.control.ledger import Ledger
from responder.control.runs import ActiveRun
from responder.decision.decisions import Decision, Verdict, decide, fact_for
from responder.decision.engine import Engine, EngineRejected, Match
from responder.decision.rules import RuleBook
from responder.decision.services import Catalog
from responder.events.cloudevents import CloudEvent, Outcome, is_batch, parse_events
from responder.events.facts import Fact
from responder.events.manual_runs import MANUAL_RULE, RunRequest, decision_for, rule_policy
from responder.events.webhook import Alert, AlertmanagerWebhook
from responder.exceptions import StoreUnavailable, TemplateError
from responder.orchestration.decision_events import RefusedDecision
from responder.orchestration.dispatch import Dispatcher
from responder.storage.inbox import InboxSource, PendingMessage
from responder.storage.store import Store

log = logging.getLogger(__name__)

MAX_CHAIN = 8

# A storm allocates many short-lived objects while the engine holds many long-lived ones
# (every firing alert). With CPython's default (a young collection every 700 allocations),
# collections cost about 15 % of the decision path (docs/benchmarks.md).
YOUNG_GC_THRESHOLD = 20_000

# Bounds of one engine transaction, so that it holds SQLite's write lock (and a PostgreSQL
# transaction stays open) briefly: items handled, and seconds of work before committing.
BATCH_ITEMS = 1_000
TRANSACTION_SECONDS = 0.1
# Inbox bodies read per step beyond the first row (what the step parses and holds).
BATCH_BYTES = 4 * 1_048_576
LEARN_FIRST = 32  # alert identities read ahead first in a transaction (then 64, 128, ...)


def collect_garbage_less_often() -> None:
    """Raise the young generation's collection threshold of this whole process (the API
    shares it); a threshold already higher is kept."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_GC_THRESHOLD, young), middle, old)


# flow name, parameters → what the flow would refuse (empty when they fit).
ParameterCheck = Callable[[str, dict[str, Any]], list[dict[str, str]]]


def _joinable(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels usable as fact fields (the ones rules can join on)."""
    return {k: v for k, v in labels.items() if k.isidentifier() and len(k) <= 63}


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
        batch_items: int = BATCH_ITEMS,
        batch_bytes: int = BATCH_BYTES,
        transaction_seconds: float = TRANSACTION_SECONDS,
        idle_seconds: float = 0.05,
        partitions: int = 16,
        event_ttl: float = 3600.0,
        check_parameters: ParameterCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._guard = guard
        self._dispatcher = dispatcher
        self._rule_vars = rule_vars or {}
        self._batch = batch
        self._batch_items = batch_items
        self._batch_bytes = batch_bytes
        self._transaction_seconds = transaction_seconds
        self._idle_seconds = idle_seconds
        self._partitions = partitions
        self._event_ttl = event_ttl
        self._clock = clock
        self._check_parameters = check_parameters
        self._checked_flows: set[str] = set()  # flows already imported by a check
        self.book = book
        self.catalog = catalog
        self.engine = Engine(book, partitions, clock)
        self.running = False
        self.wake = asyncio.Event()
        # Held while a step runs, so a reload never swaps the engine mid-row.
        self._lock = asyncio.Lock()

    async def use(self, book: RuleBook, catalog: Catalog) -> None:
        """Switch to new rules and catalog between two steps; on a store error keep the old."""
        async with self._lock:
            await self._rebuild(book, catalog)

    async def rebuild(self) -> None:
        """Rebuild the engine's facts and alerts from the store; nothing is decided again."""
        await self._rebuild(self.book, self.catalog)

    async def _rebuild(self, book: RuleBook, catalog: Catalog) -> None:
        # Read the store first: if it fails, the engine in use stays whole.
        facts = await self._store.facts.live(self._clock())
        firing = await self._store.alerts.firing()
        # Compiled off the event loop (seconds for thousands of rules). durable_rules is used
        # by one thread at a time: steps, the only other users, wait for the lock we hold.
        engine = await asyncio.to_thread(self._build, book, catalog, facts, firing)
        old, self.engine, self.book, self.catalog = self.engine, engine, book, catalog
        old.close()

    def _build(
        self, book: RuleBook, catalog: Catalog, facts: list[Fact], firing: list[Alert]
    ) -> Engine:
        engine = Engine(book, self._partitions, self._clock)
        for fact in [*catalog.facts(self._clock()), *facts]:
            try:
                engine.assert_fact(fact)
            except EngineRejected:
                log.error("engine rejected fact %s during rebuild", fact.id)
        for alert in firing:
            try:
                engine.assert_alert(alert)
            except EngineRejected:
                log.error("engine rejected held alert %s during rebuild", alert.incident)
        return engine

    async def run(self) -> None:
        """Process the inbox until cancelled; a store failure rebuilds and retries.

        Call `rebuild` first: the engine must hold the store's facts before new ones arrive.
        """
        collect_garbage_less_often()
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
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The batch rolled back; the engine may hold what the store does not.
                    # Retry until the store answers: this task must not die.
                    kind = "store" if isinstance(exc, StoreUnavailable | OSError) else "step"
                    metrics.ENGINE_ERRORS.labels(kind=kind).inc()
                    log.exception("engine loop: %s; rebuilding and retrying", exc)
                    await self._recover()
        finally:
            self.running = False

    async def _recover(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self.rebuild()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("engine loop: rebuild failed (%s); retrying in %.0fs", exc, delay)
                delay = min(delay * 2, 30.0)

    async def step(self) -> int:
        """Process due timers and up to one batch of inbox rows; return how many rows.

        The batch is read at once (at most `batch` rows, and `batch_bytes` of bodies beyond
        the first), then handled in short transactions with buffered, bulk writes. A failure
        rolls back only the transaction under way; its items are read again.
        """
        async with self._lock:
            await self._tick()
            messages = await self._store.inbox.pending(self._batch, self._batch_bytes)
            if messages:
                await self._process(messages)
            return len(messages)

    def _announce(self, work: _Work) -> None:
        """After a commit: refused decisions become Prefect events too."""
        if self._dispatcher is not None and work.refused:
            self._dispatcher.announce_refused(
                [
                    RefusedDecision(
                        admission.decision_id,
                        decision.rule,
                        decision.flow,
                        decision.key,
                        admission.refusal or "",
                        admission.reason,
                        admission.held_by,
                    )
                    for admission, decision in work.refused
                ]
            )

    async def _submit(self, admitted: list[ActiveRun]) -> None:
        if self._dispatcher is not None:
            for run in admitted:
                await self._dispatcher.submit(run)

    async def _tick(self) -> None:
        """Expire facts, and decide for `firing_for` rules that came due.

        Many timers due at once are decided over several short transactions: a failure
        after some committed loses none, since a rebuild re-arms every timer and `decided`
        keeps a rule and incident from being decided twice.
        """
        due, expired = self.engine.tick()
        due.reverse()  # popped from the end, in order
        while due or expired:
            async with self._store.turn(), self._store.transaction() as conn:
                work = _Work(self._store, self._guard, conn, self._clock)
                await self._store.facts.remove(conn, [f.id for f in expired])
                expired = []
                deadline = time.monotonic() + self._transaction_seconds
                admitted: list[ActiveRun] = []
                handled = 0
                while due and (
                    not handled or (handled < self._batch_items and time.monotonic() < deadline)
                ):
                    match = due.pop()
                    handled += 1
                    # A restart re-arms every firing_for timer: decide once per rule and
                    # incident. A retry is a new attempt on purpose; max_attempts bounds it.
                    if match.retry or not await self._store.decisions.decided(
                        conn, match.rule.name, match.alert.incident
                    ):
                        admitted.extend(await self._apply(work, [match], inbox_id=None))
                await work.flush()
            self._announce(work)
            await self._submit(admitted)

    async def _process(self, messages: list[PendingMessage]) -> None:
        """Handle the rows' items in order, over as many short transactions as they need.

        Each transaction commits what its items wrote together with the rows' progress, so
        after a failure or a crash the next step resumes at the first uncommitted item.
        """
        rows = [(message.id, message.progress, self._items(message)) for message in messages]
        row, item = 0, rows[0][1] if rows else 0
        while row < len(rows):
            admitted: list[ActiveRun] = []
            async with self._store.turn(), self._store.transaction() as conn:
                work = _Work(self._store, self._guard, conn, self._clock)
                deadline = time.monotonic() + self._transaction_seconds
                finished: list[int] = []
                handled, learned, window = 0, 0, LEARN_FIRST
                while row < len(rows):
                    inbox_id, _, items = rows[row]
                    if item >= len(items):
                        finished.append(inbox_id)
                        row += 1
                        item = rows[row][1] if row < len(rows) else 0
                        continue
                    if handled and (handled >= self._batch_items or time.monotonic() >= deadline):
                        break  # at least one item per transaction: always progress
                    if handled == learned:
                        # Identities are read ahead in growing windows: a slow transaction
                        # that handles few items does not read a thousand.
                        window = min(window, self._batch_items - handled)
                        await work.learn_identities(self._next_alerts(rows, row, item, window))
                        learned, window = handled + window, window * 2
                    admitted.extend(await self._handle(work, inbox_id, items[item]))
                    item += 1
                    handled += 1
                await work.flush()
                await self._store.inbox.mark_processed(conn, finished)
                if row < len(rows) and item > rows[row][1]:
                    await self._store.inbox.set_progress(conn, rows[row][0], item)
            self._announce(work)
            await self._submit(admitted)

    def _items(self, message: PendingMessage) -> list[Alert | CloudEvent | Outcome | RunRequest]:
        """A row's items, each handled on its own: alerts, events, an outcome, a run request."""
        try:
            if message.source is InboxSource.CLOUDEVENTS:
                return list(parse_events(message.body, is_batch(message.body)))
            if message.source is InboxSource.OUTCOME:
                return [Outcome.from_body(message.body)]
            if message.source is InboxSource.RUN_REQUEST:
                return [RunRequest.model_validate_json(message.body)]
            return list(AlertmanagerWebhook.model_validate_json(message.body).alerts)
        except ValidationError as exc:
            # Intake validated it; this only happens if the schema changed underneath.
            metrics.ENGINE_ERRORS.labels(kind="bad_message").inc()
            log.error("inbox row %s no longer validates: %s", message.id, exc)
            return []

    @staticmethod
    def _next_alerts(
        rows: list[tuple[int, int, list[Any]]], row: int, item: int, count: int
    ) -> list[Alert]:
        """The alerts among the next `count` items, from `item` of `row` on."""
        alerts: list[Alert] = []
        left = count
        while row < len(rows) and left > 0:
            upcoming = rows[row][2][item : item + left]
            alerts.extend(a for a in upcoming if isinstance(a, Alert))
            left -= len(upcoming)
            row += 1
            item = rows[row][1] if row < len(rows) else 0
        return alerts

    async def _handle(
        self, work: _Work, inbox_id: int, item: Alert | CloudEvent | Outcome | RunRequest
    ) -> list[ActiveRun]:
        if isinstance(item, Alert):
            metrics.count_alert(item.status)
            return await self._handle_alert(work, item, inbox_id)
        if isinstance(item, RunRequest):
            ruled = rule_policy(item, self.book, self.catalog, self.engine.facts(), self._rule_vars)
            decision = decision_for(item, inbox_id, self._clock(), ruled)
            if ruled is not None and ruled.blocked is not None:
                reason = ruled.blocked  # maintenance, an outage: what stops the rule
                work.record(decision.alert, inbox_id, Verdict.REFUSED, reason, MANUAL_RULE)
                return []
            return await self._admit(work, decision, inbox_id)
        if isinstance(item, Outcome):
            self._climb_ladder(item)
            return await self._assert(work, item.fact(self._fact_expiry()), inbox_id)
        metrics.EVENTS_RECEIVED.inc()
        return await self._assert(work, item.fact(self._fact_expiry()), inbox_id)

    def _climb_ladder(self, outcome: Outcome) -> None:
        """The escalation ladder: a remediation completed, but if its alert still fires once
        the cooldown is over, that is a new attempt, until the rule's max_attempts."""
        rule = next((r for r in self.book.rules if r.name == outcome.rule), None)
        if outcome.state != "COMPLETED" or rule is None or rule.guard is None:
            return
        if (rule.guard.max_attempts or 1) > 1:
            when = self._clock() + rule.guard.cooldown + 1.0
            self.engine.retry_after(rule.name, outcome.incident, when)

    def _fact_expiry(self) -> float:
        return self._clock() + self._event_ttl

    async def _assert(self, work: _Work, fact: Fact, inbox_id: int | None) -> list[ActiveRun]:
        """Hold a fact (an event, an outcome, ...); rules it completes decide for their alerts."""
        await self._store.facts.save(work.conn, fact)
        try:
            matches = self.engine.assert_fact(fact)
        except EngineRejected:
            log.error("the rules engine rejected fact %s", fact.id)  # counted by the engine
            return []
        return await self._apply(work, matches, inbox_id)

    async def _handle_alert(self, work: _Work, alert: Alert, inbox_id: int) -> list[ActiveRun]:
        first = work.first_seen_in(alert)
        if first is not None:
            work.record(
                alert,
                inbox_id,
                Verdict.DUPLICATE,
                f"{alert.status} alert already handled (inbox #{first})",
            )
            return []
        work.note(alert, inbox_id)
        if alert.status == "resolved":
            matches = self.engine.retract_alert(alert)
            work.set_firing(alert, firing=False)
            work.record(alert, inbox_id, Verdict.RESOLVED, "fact retracted")
            return await self._apply(work, matches, inbox_id)
        if work.was_resolved(alert):
            # A firing notice that arrives after the same incident resolved is stale.
            work.record(alert, inbox_id, Verdict.DUPLICATE, "incident already resolved")
            return []
        try:
            matches = self.engine.assert_alert(alert)
        except EngineRejected:
            work.record(alert, inbox_id, Verdict.ERROR, "the rules engine rejected this alert")
            return []
        work.set_firing(alert, firing=True)
        if not matches:
            work.record(alert, inbox_id, Verdict.UNMATCHED, "no rule matched")
            return []
        return await self._apply(work, matches, inbox_id)

    async def _apply(
        self, work: _Work, matches: list[Match], inbox_id: int | None, depth: int = 0
    ) -> list[ActiveRun]:
        """Act on matches in priority order: retract and assert facts, then decide.

        Asserting a fact can make more rules hold (forward chaining); those are applied
        in turn, up to `MAX_CHAIN` levels deep.
        """
        admitted: list[ActiveRun] = []
        for match in matches:
            rule, alert = match.rule, match.alert
            if not self.engine.still_holds(match):
                work.record(
                    alert,
                    inbox_id,
                    Verdict.UNMATCHED,
                    "held, then a fact it requires or excludes changed",
                    rule=rule.name,
                )
                continue
            try:
                done = await self._change_facts(work, match, inbox_id, depth)
            except TemplateError as exc:
                work.record(alert, inbox_id, Verdict.ERROR, str(exc), rule=rule.name)
                continue
            admitted.extend(done)
            if rule.run is None:
                continue
            try:
                decision = decide(match, self._rule_vars, self.catalog)
            except TemplateError as exc:
                work.record(alert, inbox_id, Verdict.ERROR, str(exc), rule=rule.name)
                continue
            admitted.extend(await self._admit(work, decision, inbox_id))
        return admitted

    async def _admit(
        self, work: _Work, decision: Decision, inbox_id: int | None
    ) -> list[ActiveRun]:
        """Put a decision to the guard; an admitted one becomes a run to dispatch.

        Parameters the flow would refuse (a label that is not a hostname, say) make the
        decision an error before the guard: nothing is admitted, nothing runs.
        """
        alert = decision.alert
        if self._check_parameters is not None:
            if decision.flow in self._checked_flows:
                errors = self._check_parameters(decision.flow, decision.parameters)
            else:
                # In a thread: the first check of a flow imports it (and Prefect).
                errors = await asyncio.to_thread(
                    self._check_parameters, decision.flow, decision.parameters
                )
                self._checked_flows.add(decision.flow)
            if errors:
                shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
                reason = f"parameters do not fit flow {decision.flow!r}: {shown}"
                work.record(alert, inbox_id, Verdict.ERROR, reason, rule=decision.rule)
                return []
        admission = await work.guard.admit(decision, inbox_id)
        metrics.count_decision(admission.verdict, admission.refusal)
        admitted: list[ActiveRun] = []
        if admission.verdict is Verdict.REFUSED and admission.refusal is not None:
            work.refused.append((admission, decision))
        if admission.refusal == "max_attempts":
            # The top of the ladder: rules escalate on this fact (page, notify).
            exhausted = Fact(
                "exhausted",
                {**_joinable(alert.labels), "rule": decision.rule},
                self._fact_expiry(),
                source=f"rule:{decision.rule}",
            )
            admitted.extend(await self._assert(work, exhausted, inbox_id))
        if admission.admitted:
            admitted.append(ActiveRun.admitted(admission.decision_id, decision))
        return admitted

    async def _change_facts(
        self, work: _Work, match: Match, inbox_id: int | None, depth: int
    ) -> list[ActiveRun]:
        rule, alert = match.rule, match.alert
        notes: list[str] = []
        for condition in rule.retract:
            gone = self.engine.retract_facts(condition, alert)
            await self._store.facts.remove(work.conn, [f.id for f in gone])
            notes.extend(f"retracted {_show(f)}" for f in gone)
        chained: list[Match] = []
        if rule.assert_ is not None:
            fact = fact_for(match, self._rule_vars, self.catalog, self._clock())
            await self._store.facts.save(work.conn, fact)
            try:
                chained = self.engine.assert_fact(fact)
            except EngineRejected:
                log.error("the rules engine rejected fact %s", fact.id)
            notes.append(f"asserted {_show(fact)}")
        if rule.run is None:
            work.record(
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
        return await self._apply(work, chained, inbox_id, depth + 1)


class _Work:
    """One transaction's buffered writes: decisions, alert identities and firing alerts.

    Identities of a whole batch are read in one query and written in one; decisions go to
    the transaction's ledger, which writes them in bulk and in order.
    """

    def __init__(
        self, store: Store, guard: Guard, conn: AsyncConnection, clock: Callable[[], float]
    ) -> None:
        # Refused decisions, announced as Prefect events once the transaction commits.
        self.refused: list[tuple[Admission, Decision]] = []
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
