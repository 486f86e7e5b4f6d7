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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from responder import metrics
from responder.control.guard import Guard
from responder.control.runs import ActiveRun
from responder.decision.decisions import Verdict
from responder.decision.engine import Engine, EngineRejected
from responder.decision.event_rules import HeldFacts
from responder.decision.pipeline import MAX_CHAIN, ParameterCheck, Pipeline
from responder.decision.rules import RuleBook
from responder.decision.services import ServiceCatalog
from responder.events.cloudevents import CloudEvent, Outcome, is_batch, parse_events
from responder.events.facts import Fact
from responder.events.manual_runs import RunRequest
from responder.events.webhook import Alert, AlertmanagerWebhook
from responder.exceptions import StoreUnavailable
from responder.orchestration.decision_events import RefusedDecision
from responder.orchestration.flow_catalog import reload_flows
from responder.runtime import convergence, event_timers
from responder.runtime.work import Work
from responder.storage.inbox import InboxSource, PendingMessage
from responder.storage.incidents import IncidentState
from responder.storage.store import Store
from responder.tasks import wake_or_timeout

if TYPE_CHECKING:
    from responder.orchestration.dispatch import Dispatcher

log = logging.getLogger(__name__)

# A storm allocates many short-lived objects while the engine holds many long-lived ones
# (every firing alert). With CPython's default (a young collection every 700 allocations),
# collections cost about 15 % of the decision path (docs/benchmarks.md).
YOUNG_GC_THRESHOLD = 20_000

# Bounds of one engine transaction, so that it holds SQLite's write lock (and a PostgreSQL
# transaction stays open) briefly: items handled, and seconds of work before committing.
BATCH_ITEMS = 1_000
TRANSACTION_SECONDS = 0.1
# The longest the loop decides without letting the event loop run the API's requests: a
# webhook arriving mid-transaction is read, validated and committed to the inbox meanwhile
# (its commit waits only for the engine's write section, `Database.transaction(turn=True)`).
YIELD_SECONDS = 0.005
# Inbox bodies read per step beyond the first row (what the step parses and holds).
BATCH_BYTES = 4 * 1_048_576
LEARN_FIRST = 128  # alert identities read ahead first in a transaction (then 256, 512...)
# Incidents decided again per transaction once their block cleared, and how often the store
# is asked which blocks cleared (seconds; a reload asks at once).
# Incident states judged again after a reload.
REJUDGED = [IncidentState.UNMATCHED, IncidentState.WAITING, IncidentState.DONE]
CONVERGE_BATCH = 200
RECHECK_SECONDS = 1.0
# How long the record of a resolved incident is kept (its decisions stay in the log).
INCIDENT_RETENTION_SECONDS = 7 * 86400.0
GAUGE_SECONDS = 15.0  # how often `responder_incidents` is counted again


def collect_garbage_less_often() -> None:
    """Raise the young generation's collection threshold of this whole process (the API
    shares it); a threshold already higher is kept."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_GC_THRESHOLD, young), middle, old)


class EngineLoop:
    """Reads the inbox in order, decides in short transactions, hands off to dispatch.

    What to decide is the decision pipeline's (`responder.decision.pipeline`); this loop
    sequences it: inbox rows and due timers → a transaction → the pipeline → commit →
    dispatch.
    """

    def __init__(
        self,
        store: Store,
        guard: Guard,
        dispatcher: Dispatcher | None,
        book: RuleBook,
        catalog: ServiceCatalog,
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
        recheck_seconds: float = RECHECK_SECONDS,
        on_truncated: Callable[[AlertmanagerWebhook], None] | None = None,
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
        self._recheck_seconds = recheck_seconds
        self._next_recheck = 0.0  # time.monotonic() of the next convergence pass
        self._next_gauge = 0.0
        # Told of each processed webhook that Alertmanager truncated (`runtime/recovery.py`).
        self._on_truncated = on_truncated
        self._truncated: list[AlertmanagerWebhook] = []
        # Not compiled (`Engine.compile`) until used: `rebuild` (the start's) makes the engine
        # that decides, and compiling this one too kept a second set of native rulesets.
        self.pipeline = self._pipeline(Engine(book, partitions, clock), book, catalog)
        guard.catalog_windows = catalog.windows
        self.running = False
        self.wake = asyncio.Event()
        # Held while a step runs, so a reload never swaps the engine mid-row.
        self._lock = asyncio.Lock()

    async def use(self, book: RuleBook, catalog: ServiceCatalog) -> None:
        """Switch to new rules and catalog between two steps; on a store error keep the old.

        The rules were checked against the flows as their files are now, so the parameters
        flows accept are read again too: a changed flow file is not checked as it was.
        """
        async with self._lock:
            reload_flows()
            before = self.pipeline.events
            await self._rebuild(book, catalog)
            self.pipeline.events.keep_windows_of(before)  # counting goes on
            # Firing incidents are judged again under the new rules, durably (a leader that
            # stops before its next tick leaves them due for the next one): a rule added
            # acts, one removed stops waiting. Running ones wait for their run's end;
            # exhausted ones stay so.
            held = [(a.incident, a.alertname) for a in self.engine.all_held()]
            async with self._store.transaction() as conn:
                await self._store.incidents.record_unmatched(conn, held, self._clock())
                await self._store.incidents.ask_again(conn, REJUDGED)
            self._next_recheck = 0.0

    async def rebuild(self) -> None:
        """Rebuild the engine's facts and alerts, and the event rules' windows, from the
        store; nothing is decided again."""
        await self._rebuild(self.book, self.catalog)
        await self._recall_events()

    async def _recall_events(self) -> None:
        """The event rules' `count` windows and `after` predecessors, from the events the
        inbox kept (processed ones, as far back as a rule remembers): what a new leader,
        a restart or the retry after a store error would otherwise have forgotten."""
        rules = self.pipeline.events
        seconds = rules.memory_seconds()
        if seconds is None:
            return
        rows = await self._store.inbox.received(
            (InboxSource.CLOUDEVENTS,), self._clock() - seconds, None, processed_only=True
        )
        held = HeldFacts(self.engine.facts_named)

        def recall() -> None:  # minutes of events: parsed off the event loop
            rules.forget()
            for received_at, _, body in rows:
                try:
                    events = parse_events(body, is_batch(body))
                except ValidationError as exc:  # as in `_items`: a schema changed underneath
                    log.error("an event kept in the inbox no longer validates: %s", exc)
                    continue
                for event in events:
                    rules.recall(event, held, received_at)

        # Nothing else uses these rules meanwhile: a rebuild runs before the loop, or under
        # its lock.
        await asyncio.to_thread(recall)

    @property
    def engine(self) -> Engine:
        return self.pipeline.engine

    @property
    def book(self) -> RuleBook:
        return self.pipeline.book

    @property
    def catalog(self) -> ServiceCatalog:
        return self.pipeline.catalog

    def _pipeline(self, engine: Engine, book: RuleBook, catalog: ServiceCatalog) -> Pipeline:
        return Pipeline(
            engine,
            book,
            catalog,
            rule_vars=self._rule_vars,
            clock=self._clock,
            event_ttl=self._event_ttl,
            check_parameters=self._check_parameters,
        )

    async def _rebuild(self, book: RuleBook, catalog: ServiceCatalog) -> None:
        # Read the store first: if it fails, the engine in use stays whole.
        facts = await self._store.facts.live(self._clock())
        firing = await self._store.alerts.firing()
        # Compiled off the event loop (seconds for thousands of rules). durable_rules is used
        # by one thread at a time: steps, the only other users, wait for the lock we hold.
        engine = await asyncio.to_thread(self._build, book, catalog, facts, firing)
        old, self.pipeline = self.engine, self._pipeline(engine, book, catalog)
        self._guard.catalog_windows = catalog.windows
        old.close()
        rows = event_timers.schedule_rows(book, self._clock())
        if rows:  # each schedule rule's next tick, unless one is set (durable: kept)
            async with self._store.transaction(turn=True) as conn:
                await self._store.timers.arm(conn, rows)

    def _build(
        self, book: RuleBook, catalog: ServiceCatalog, facts: list[Fact], firing: list[Alert]
    ) -> Engine:
        engine = Engine(book, self._partitions, self._clock)
        engine.compile()  # here, off the event loop
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

    def recheck_now(self) -> None:
        """Look at waiting incidents at the next step, not at the next interval (the
        pause was lifted here)."""
        self._next_recheck = 0.0
        self.wake.set()

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
                        await wake_or_timeout(self.wake, self._idle_seconds)
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

    def _announce(self, work: Work) -> None:
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
        """After a commit: admitted decisions go to dispatch."""
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
            async with self._store.transaction(turn=True) as conn:
                work = Work(self._store, self._guard, conn, self._clock)
                await work.delete_facts(expired)
                expired = []
                deadline = time.monotonic() + self._transaction_seconds
                handled = 0
                while due and (
                    not handled or (handled < self._batch_items and time.monotonic() < deadline)
                ):
                    match = due.pop()
                    handled += 1
                    # A restart re-arms every firing_for timer: decide once per rule and
                    # incident (retries up the ladder are convergence's).
                    if not await self._store.decisions.decided(
                        conn, match.rule.name, match.alert.incident
                    ):
                        await self.pipeline.due(work, match)
                await self._finish(work)
            self._announce(work)
            await self._submit(work.admitted)
        await self._converge()

    async def _finish(self, work: Work) -> None:
        """End a transaction's work: incidents that facts gone in it (expired, retracted)
        kept from matching are decided (as far as forward chaining goes), then it is all
        written."""
        for _ in range(MAX_CHAIN):
            gone = work.take_removed_facts()
            if not gone:
                break
            await convergence.unblock(self._store, work, self.pipeline, gone)
        await work.flush()

    async def _converge(self) -> None:
        """Decide again the incidents whose block cleared (`runtime.convergence`), at most
        every `recheck_seconds`, in transactions bounded like the inbox's (at most
        `CONVERGE_BATCH` incidents, `transaction_seconds`)."""
        if time.monotonic() < self._next_recheck:
            return
        self._next_recheck = time.monotonic() + self._recheck_seconds
        while True:
            async with self._store.transaction(turn=True) as conn:
                work = Work(self._store, self._guard, conn, self._clock)
                deadline = time.monotonic() + self._transaction_seconds
                timers = await self._store.timers.due(conn, self._clock(), CONVERGE_BATCH)
                fired = await convergence.fire(
                    self._store, work, self.pipeline, timers, self._clock(), deadline
                )
                paused = await self._guard.pause(conn) is not None
                rows = await self._store.incidents.due(
                    conn, self._clock(), paused=paused, limit=CONVERGE_BATCH
                )
                handled = await convergence.reexamine(
                    self._store, work, self.pipeline, rows, self._clock(), deadline
                )
                await self._finish(work)
            self._announce(work)
            await self._submit(work.admitted)
            if fired == len(timers) < CONVERGE_BATCH and handled == len(rows) < CONVERGE_BATCH:
                break
        if time.monotonic() >= self._next_gauge:
            self._next_gauge = time.monotonic() + GAUGE_SECONDS
            metrics.set_incidents(await self._store.incidents.counts())
            await self._store.incidents.forget_resolved(self._clock() - INCIDENT_RETENTION_SECONDS)

    async def _process(self, messages: list[PendingMessage]) -> None:
        """Handle the rows' items in order, over as many short transactions as they need.

        Each transaction commits what its items wrote together with the rows' progress, so
        after a failure or a crash the next step resumes at the first uncommitted item.
        """
        self._truncated = []
        rows = [(message.id, message.progress, self._items(message)) for message in messages]
        row, item = 0, rows[0][1] if rows else 0
        while row < len(rows):
            async with self._store.transaction(turn=True) as conn:
                work = Work(self._store, self._guard, conn, self._clock)
                deadline = time.monotonic() + self._transaction_seconds
                finished: list[int] = []
                handled, learned, window = 0, 0, LEARN_FIRST
                next_yield = time.monotonic() + YIELD_SECONDS
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
                    await self._handle(work, inbox_id, items[item])
                    item += 1
                    handled += 1
                    if time.monotonic() >= next_yield:
                        await asyncio.sleep(0)
                        next_yield = time.monotonic() + YIELD_SECONDS
                await self._finish(work)
                await self._store.inbox.mark_processed(conn, finished)
                if row < len(rows) and item > rows[row][1]:
                    await self._store.inbox.set_progress(conn, rows[row][0], item)
            self._announce(work)
            await self._submit(work.admitted)
        if self._on_truncated is not None:
            for webhook in self._truncated:
                self._on_truncated(webhook)

    def _items(self, message: PendingMessage) -> list[Alert | CloudEvent | Outcome | RunRequest]:
        """A row's items, each handled on its own: alerts, events, an outcome, a run request."""
        try:
            parsed = message.parsed  # the intake's parse of this body, if it was kept
            if message.source is InboxSource.CLOUDEVENTS:
                if isinstance(parsed, list):
                    return list(parsed)
                return list(parse_events(message.body, is_batch(message.body)))
            if message.source is InboxSource.OUTCOME:
                self._next_recheck = 0.0  # a run ended: its names are free now
                return [Outcome.from_body(message.body)]
            if message.source is InboxSource.RUN_REQUEST:
                return [RunRequest.model_validate_json(message.body)]
            if isinstance(parsed, AlertmanagerWebhook):
                webhook = parsed
            else:
                webhook = AlertmanagerWebhook.model_validate_json(message.body)
            if webhook.truncated_alerts:
                self._truncated.append(webhook)
            return list(webhook.alerts)
        except ValidationError as exc:
            # Intake validated it; this only happens if the schema changed underneath.
            metrics.ENGINE_ERRORS.labels(kind="bad_message").inc()
            log.error("inbox row %s no longer validates: %s", message.id, exc)
            return []

    @staticmethod
    def _next_alerts(
        rows: list[tuple[int, int, list[Any]]], row: int, item: int, count: int
    ) -> list[Alert]:
        """The alerts (and events, as alerts) among the next `count` items, from `item` of
        `row` on."""
        alerts: list[Alert] = []
        left = count
        while row < len(rows) and left > 0:
            upcoming = rows[row][2][item : item + left]
            for a in upcoming:  # an event's identity is an alert's (`CloudEvent.as_alert`)
                if isinstance(a, Alert | CloudEvent):
                    alerts.append(a if isinstance(a, Alert) else a.as_alert())
            left -= len(upcoming)
            row += 1
            item = rows[row][1] if row < len(rows) else 0
        return alerts

    async def _handle(
        self, work: Work, inbox_id: int, item: Alert | CloudEvent | Outcome | RunRequest
    ) -> None:
        if isinstance(item, Alert):
            metrics.count_alert(item.status)
            await self._handle_alert(work, item, inbox_id)
        elif isinstance(item, RunRequest):
            await self.pipeline.manual_run(work, item, inbox_id)
        elif isinstance(item, Outcome):
            await self.pipeline.outcome(work, item, inbox_id)
        else:
            await self.pipeline.event(work, item, inbox_id)

    async def _handle_alert(self, work: Work, alert: Alert, inbox_id: int) -> None:
        """Each (fingerprint, startsAt, status) is decided once, whatever Alertmanager resends."""
        first = work.first_seen_in(alert)
        if first is not None:
            reason = f"{alert.status} alert already handled (inbox #{first})"
            work.record(alert, inbox_id, Verdict.DUPLICATE, reason)
            return
        work.note(alert, inbox_id)
        if alert.status != "resolved" and work.was_resolved(alert):
            # A firing notice that arrives after the same incident resolved is stale.
            work.record(alert, inbox_id, Verdict.DUPLICATE, "incident already resolved")
            return
        await self.pipeline.alert(work, alert, inbox_id)
