"""The decision pipeline: what the engine says of alerts, facts and requests, made into
decisions and put to the guard.

Acting on a match can change facts (`retract`, `assert`), and a decision the guard refuses at
the top of the escalation ladder asserts the `exhausted` fact; either can make more rules
hold (forward chaining). A fact asserted while acting on a match of depth d yields matches
of depth d + 1, whichever path asserted it, and no match deeper than `MAX_CHAIN` is acted
on: rules that feed one another stop there instead of recursing without end.

The pipeline writes nothing itself. It works in the engine loop's store transaction (a
`Transaction`), which records verdicts, holds facts, puts decisions to the guard and, once
it commits, dispatches what the guard admitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from responder import metrics
from responder.decision.decisions import Decision, Verdict, decide, fact_for
from responder.decision.engine import Engine, EngineRejected, Match
from responder.decision.escalation import (
    TOP_OF_THE_LADDER,
    NextAttempt,
    exhausted_fact,
    next_attempt,
)
from responder.decision.event_rules import ABSENCE_SOURCE, Absence, EventRules, HeldFacts
from responder.decision.manual import decision_for, rule_policy
from responder.decision.rules import RuleBook
from responder.decision.schedules import SCHEDULE_SOURCE
from responder.decision.services import ServiceCatalog
from responder.events.cloudevents import OUTCOME_SOURCE, CloudEvent, Outcome
from responder.events.facts import Fact
from responder.events.manual_runs import MANUAL_RULE, RunRequest
from responder.events.webhook import Alert
from responder.exceptions import TemplateError

log = logging.getLogger(__name__)

# How deep forward chaining goes from an alert, an event, an outcome or a request (depth 0).
MAX_CHAIN = 8

# Events Responder makes itself: no `event` fact (an outcome is a fact of its own already).
OWN_SOURCES = frozenset({SCHEDULE_SOURCE, ABSENCE_SOURCE, OUTCOME_SOURCE})

# flow name, parameters → what the flow would refuse (empty when they fit).
ParameterCheck = Callable[[str, dict[str, Any]], list[dict[str, str]]]


class Transaction(Protocol):
    """The store transaction a pipeline decides in (the engine loop's buffered writes)."""

    def record(
        self,
        alert: Alert,
        inbox_id: int | None,
        verdict: Verdict,
        reason: str,
        rule: str | None = None,
    ) -> None:
        """Record a verdict that needs no guard."""

    async def admit(self, decision: Decision, inbox_id: int | None) -> str | None:
        """Put a decision to the guard (recorded either way); return its refusal, if any."""

    async def save_fact(self, fact: Fact) -> None:
        """Keep a fact the engine now holds."""

    async def delete_facts(self, facts: list[Fact]) -> None:
        """Forget facts the engine let go of."""

    def set_firing(self, alert: Alert, *, firing: bool) -> None:
        """Keep (or let go of) an alert the engine holds as firing."""

    def defer(self, match: Match, inbox_id: int | None, seconds: float) -> None:
        """Record that the match's rule waits `seconds` before acting (a durable timer:
        convergence decides it then, if it still holds)."""

    def try_again(self, attempt: NextAttempt) -> None:
        """Have the incident decided again by the rule at the attempt's time (a durable
        timer, `storage.timers`)."""

    async def learn_identities(self, alerts: list[Alert]) -> None:
        """Read which of these identities were handled already."""

    def first_seen_in(self, alert: Alert) -> int | None:
        """The inbox row an identity was first handled in; None if never."""

    def note(self, alert: Alert, inbox_id: int) -> None:
        """Record an identity as handled."""

    def await_follower(self, absence: Absence, inbox_id: int | None) -> None:
        """Set an absence timer (durable): the rule decides then, if no follower came."""

    def follower_came(self, pairs: list[tuple[str, str]]) -> None:
        """End the absence timers (rule, key) a follower answered."""


class Pipeline:
    """Decides with one engine, rule book and service catalog (a reload makes a new one)."""

    def __init__(
        self,
        engine: Engine,
        book: RuleBook,
        catalog: ServiceCatalog,
        *,
        rule_vars: Mapping[str, str],
        clock: Callable[[], float],
        event_ttl: float,
        check_parameters: ParameterCheck | None = None,
    ) -> None:
        self.engine = engine
        self.book = book
        self.catalog = catalog
        self._rule_vars = rule_vars
        self._clock = clock
        self._event_ttl = event_ttl
        self._check_parameters = check_parameters
        self._checked_flows: set[str] = set()  # flows already imported by a check
        self.events = EventRules(book, clock)

    # --- what arrives --------------------------------------------------------------------

    async def alert(self, work: Transaction, alert: Alert, inbox_id: int) -> None:
        """A new firing alert is held and decided for; a resolved one is let go of."""
        if alert.status == "resolved":
            matches = self.engine.retract_alert(alert)
            work.set_firing(alert, firing=False)
            work.record(alert, inbox_id, Verdict.RESOLVED, "fact retracted")
            await self._apply(work, matches, inbox_id, 0, settled=True)
            return
        try:
            matches = self.engine.assert_alert(alert)
        except EngineRejected:
            work.record(alert, inbox_id, Verdict.ERROR, "the rules engine rejected this alert")
            return
        work.set_firing(alert, firing=True)
        if not matches:
            work.record(alert, inbox_id, Verdict.UNMATCHED, "no rule matched")
            return
        await self._apply(work, matches, inbox_id, 0)

    async def due(self, work: Transaction, match: Match) -> None:
        """A `firing_for` rule that came due (it has waited already: no `settle`)."""
        await self._apply(work, [match], None, 0, settled=True)

    async def again(self, work: Transaction, matches: list[Match]) -> None:
        """Rules that hold for an incident whose refusal cleared, whose rules changed, or
        whose `settle` time is over: decided now."""
        await self._apply(work, matches, None, 0, settled=True)

    async def event(self, work: Transaction, event: CloudEvent, inbox_id: int) -> None:
        """An event: a fact for the rules on alerts to join, and decided by the rules on
        events once per identity (`source` and `id`: a resent event is a duplicate)."""
        own = event.source in OWN_SOURCES
        if not own:
            metrics.EVENTS_RECEIVED.inc()
        if self.events.rules or own:
            alert = event.as_alert()
            await work.learn_identities([alert])
            first = work.first_seen_in(alert)
            if first is not None:
                reason = f"event {event.source} {event.id} already handled (inbox #{first})"
                work.record(alert, inbox_id, Verdict.DUPLICATE, reason)
                return
            work.note(alert, inbox_id)
            work.follower_came(self.events.followed(event))
        if not own:
            await self._assert(work, event.fact(self._fact_expiry()), inbox_id, 0)
        if not self.events.rules:
            return
        held = HeldFacts(self.engine.facts)
        matches, absences = self.events.match(event, held, self.engine.all_held)
        for absence in absences:
            work.await_follower(absence, inbox_id)
        await self._apply(work, matches, inbox_id, 0, settled=True)

    async def outcome(self, work: Transaction, outcome: Outcome, inbox_id: int) -> None:
        """A run's final state: an `outcome` fact, and maybe the next rung of the ladder."""
        attempt = next_attempt(self.book, outcome, self._clock())
        if attempt is not None and self.engine.held(outcome.incident) is not None:
            work.try_again(attempt)
        await self._assert(work, outcome.fact(self._fact_expiry()), inbox_id, 0)
        if self.events.rules:  # rules on events decide on outcomes too (`responder.outcome`)
            await self.event(work, outcome.event(), inbox_id)

    async def manual_run(self, work: Transaction, request: RunRequest, inbox_id: int) -> None:
        """A run by hand, under the policy of the rules that run its flow, if any."""
        ruled = rule_policy(request, self.book, self.catalog, self.engine.facts(), self._rule_vars)
        decision = decision_for(request, inbox_id, self._clock(), ruled)
        if ruled is not None and ruled.blocked is not None:
            reason = ruled.blocked  # maintenance, an outage: what stops the rule
            work.record(decision.alert, inbox_id, Verdict.REFUSED, reason, MANUAL_RULE)
            return
        await self._admit(work, decision, inbox_id, 0)

    # --- acting on matches ---------------------------------------------------------------

    async def _apply(
        self,
        work: Transaction,
        matches: list[Match],
        inbox_id: int | None,
        depth: int,
        *,
        settled: bool = False,
    ) -> None:
        """Act on matches (of chaining depth `depth`) in priority order: retract and
        assert facts, then decide. A rule with `settle` that has not waited yet waits."""
        for match in matches:
            rule, alert = match.rule, match.alert
            if not self.engine.still_holds(match):
                reason = "held, then a fact it requires or excludes changed"
                work.record(alert, inbox_id, Verdict.UNMATCHED, reason, rule=rule.name)
                continue
            if rule.settle is not None and not settled:
                work.defer(match, inbox_id, rule.settle)
                continue
            try:
                await self._change_facts(work, match, inbox_id, depth)
                if rule.run is None:
                    continue
                decision = decide(match, self._rule_vars, self.catalog)
            except TemplateError as exc:
                work.record(alert, inbox_id, Verdict.ERROR, str(exc), rule=rule.name)
                continue
            await self._admit(work, decision, inbox_id, depth)

    async def _change_facts(
        self, work: Transaction, match: Match, inbox_id: int | None, depth: int
    ) -> None:
        """Retract and assert the rule's facts; the matches they make are one level deeper."""
        rule, alert = match.rule, match.alert
        notes: list[str] = []
        for condition in rule.retract:
            gone = self.engine.retract_facts(condition, alert)
            await work.delete_facts(gone)
            notes.extend(f"retracted {f.shown()}" for f in gone)
        fact, chained = None, []
        if rule.assert_ is not None:
            fact = fact_for(match, self._rule_vars, self.catalog, self._clock())
            chained = await self._hold(work, fact)
            notes.append(f"asserted {fact.shown()}")
        if rule.run is None:
            reason = "; ".join(notes) or "nothing to change"
            work.record(alert, inbox_id, Verdict.ASSERTED, reason, rule=rule.name)
        if fact is not None:
            await self._follow(work, fact, chained, inbox_id, depth + 1)

    async def _admit(
        self, work: Transaction, decision: Decision, inbox_id: int | None, depth: int
    ) -> None:
        """Put a decision (made at chaining depth `depth`) to the guard.

        Parameters the flow would refuse (a label that is not a hostname, say) make the
        decision an error before the guard: nothing is admitted, nothing runs.
        """
        misfit = await self._misfit(decision)
        if misfit is not None:
            work.record(decision.alert, inbox_id, Verdict.ERROR, misfit, rule=decision.rule)
            return
        if await work.admit(decision, inbox_id) == TOP_OF_THE_LADDER:
            # Rules escalate on this fact (page, notify); their matches are one level deeper.
            fact = exhausted_fact(decision, self._fact_expiry())
            await self._assert(work, fact, inbox_id, depth + 1)

    async def _misfit(self, decision: Decision) -> str | None:
        """Why the decision's flow would refuse its parameters; None when they fit."""
        if self._check_parameters is None:
            return None
        if decision.flow in self._checked_flows:
            errors = self._check_parameters(decision.flow, decision.parameters)
        else:
            # In a thread: the first check of a flow imports it (and Prefect).
            errors = await asyncio.to_thread(
                self._check_parameters, decision.flow, decision.parameters
            )
            self._checked_flows.add(decision.flow)
        if not errors:
            return None
        shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return f"parameters do not fit flow {decision.flow!r}: {shown}"

    # --- facts ---------------------------------------------------------------------------

    async def _assert(
        self, work: Transaction, fact: Fact, inbox_id: int | None, depth: int
    ) -> None:
        """Hold a fact; the rules it completes are acted on as matches of depth `depth`."""
        await self._follow(work, fact, await self._hold(work, fact), inbox_id, depth)

    async def _hold(self, work: Transaction, fact: Fact) -> list[Match]:
        """Keep a fact and give it to the engine; return the rules it completes."""
        await work.save_fact(fact)
        try:
            return self.engine.assert_fact(fact)
        except EngineRejected:
            log.error("the rules engine rejected fact %s", fact.id)  # counted by the engine
            return []

    async def _follow(
        self, work: Transaction, fact: Fact, matches: list[Match], inbox_id: int | None, depth: int
    ) -> None:
        """Act on the matches a fact made, unless that is deeper than `MAX_CHAIN`: the one
        bound on chaining, whether rules assert the facts or the guard's refusals do."""
        if not matches:
            return
        if depth > MAX_CHAIN:
            metrics.ENGINE_ERRORS.labels(kind="chain_depth").inc()
            log.error(
                "fact %s from %s: forward chaining deeper than %d; stopped",
                fact.name,
                fact.source,
                MAX_CHAIN,
            )
            return
        await self._apply(work, matches, inbox_id, depth)

    def _fact_expiry(self) -> float:
        return self._clock() + self._event_ttl
