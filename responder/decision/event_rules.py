"""Rules on events: what decides when an event (a CloudEvent in the inbox: a sender's, a
schedule's tick, an absence noticed) arrives, rather than an alert.

Events are not held like firing alerts: each is matched once, on arrival, in Python (the
durable_rules engine holds alerts; an event rule never enters it). Its `when` and `unless`
join the facts the engine holds (`decision.conditions`), `count` counts events within a
window by their `same` fields, `after` asks for an earlier event (or a firing alert) with the
same fields, and `not_followed_by` sets a durable timer instead of deciding: the rule decides
when the timer fires without a follower (`runtime.convergence`), as an `absence` event.

Windows and predecessors are kept in memory, bounded by their `within`, like the engine's
`count` windows, and are what the store's events say: a reload carries them over to the new
rules (`keep_windows_of`) for each rule whose counting is unchanged, and a rebuild (a restart,
a new leader, the retry after a store error) recalls them from the events the inbox kept
(`recall`). Absence timers are rows of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from responder.decision.conditions import fact_meets
from responder.decision.engine import Match
from responder.decision.matchers import Matcher, MatchOp
from responder.decision.rules import Rule, RuleBook
from responder.decision.schedules import SCHEDULE_SOURCE
from responder.events.cloudevents import CloudEvent
from responder.events.facts import Fact
from responder.events.webhook import Alert

ABSENCE_SOURCE = "responder/absence"
ABSENCE_TYPE = "responder.absence"


class HeldFacts:
    """The facts the engine holds, by name: an event rule's `when` looks at the facts of one
    name, not at every event fact held."""

    def __init__(self, named: Callable[[str], list[Fact]]) -> None:
        self.named = named


@dataclass(frozen=True)
class Absence:
    """An absence timer to set: `rule` decides at `due` unless a follower came (`key`: the
    first event's `same` fields, which the follower must share)."""

    rule: str
    key: str
    due: float
    event: CloudEvent


def absence_key(rule: Rule, fields: Mapping[str, str]) -> str:
    """The `same` fields of an absence rule's first event (or of its follower), digested."""
    assert rule.not_followed_by is not None
    values = [fields.get(name, "") for name in rule.not_followed_by.same]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:40]


def absence_event(rule: str, first: CloudEvent, now: float) -> CloudEvent:
    """The event an absence is: once per rule and first event (its identity)."""
    return CloudEvent(
        specversion="1.0",
        id=f"{rule}:{first.digest}",
        source=ABSENCE_SOURCE,
        type=ABSENCE_TYPE,
        subject=rule,
        time=datetime.fromtimestamp(now, UTC),
        data={"rule": rule, "event": first.model_dump(mode="json", exclude_none=True)},
    )


def _time_of(event: CloudEvent, now: float) -> float:
    return event.time.timestamp() if event.time is not None else now


class EventRules:
    """The rules on events and schedules of one rule book, and their windows."""

    def __init__(self, book: RuleBook, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.rules = [r for r in book.rules if not r.on_alerts]
        self._by_name = {r.name: r for r in self.rules}
        self._order = {r.name: i for i, r in enumerate(self.rules)}
        self._sequence = [r for r in self.rules if r.after is not None]
        self._absence = [r for r in self.rules if r.not_followed_by is not None]
        # Each rule on events by the `type` it requires (None: any type), matchers parsed once:
        # an event meets only the rules of its type, whatever the size of the library.
        self._by_type: dict[str | None, list[tuple[Rule, tuple[Matcher, ...]]]] = {}
        for rule in self.rules:
            if rule.schedule is None:
                matchers = rule.event_matchers
                kind = next(
                    (m.value for m in matchers if m.name == "type" and m.op is MatchOp.EQ), None
                )
                self._by_type.setdefault(kind, []).append((rule, matchers))
        # (rule, same values) -> [(event time, event digest)]: `count` windows and `after`'s
        # predecessors.
        self._windows: dict[tuple[str, tuple[str, ...]], list[tuple[float, str]]] = {}
        self._earlier: dict[tuple[str, tuple[str, ...]], list[tuple[float, str]]] = {}

    def memory_seconds(self) -> float | None:
        """How far back a window or a predecessor reaches; None if no rule remembers."""
        spans = [s.within for r in self.rules for s in (r.count, r.after) if s is not None]
        return max(spans, default=None)

    def recall(self, event: CloudEvent, facts: HeldFacts, at: float) -> None:
        """Remember `event`, which arrived at `at` and was decided then, as `match` did:
        as a predecessor, and in the window of each counting rule it met. Decides nothing.
        Its `when` and `unless` are judged on the facts held now."""
        if event.source in (SCHEDULE_SOURCE, ABSENCE_SOURCE):
            return
        flat = event.flat()
        alert = event.as_alert()
        self._remember(event, flat, at)
        for rule, matchers in self._candidates(event):
            if rule.count is not None and _all(matchers, flat):
                if self._failure(rule, alert, facts) is None:
                    self._counted(rule, event, flat, at)

    def _candidates(self, event: CloudEvent) -> list[tuple[Rule, tuple[Matcher, ...]]]:
        """The rules `event` may meet (by its type), in the rules' order."""
        found = [*self._by_type.get(event.type, ()), *self._by_type.get(None, ())]
        return sorted(found, key=lambda c: self._order[c[0].name])

    def forget(self) -> None:
        """Drop every window and predecessor (before `recall` rebuilds them)."""
        self._windows.clear()
        self._earlier.clear()

    def keep_windows_of(self, old: EventRules) -> None:
        """Take over `old`'s windows and predecessors for each rule that counts and
        sequences as it did: a rule edited elsewhere (its run, guard, priority) keeps
        counting; one whose events, conditions, `count` or `after` changed starts again, as
        does a new one. Entries are pruned as before: when their key next sees an event."""
        for mine, theirs, spec_of in (
            (self._windows, old._windows, _counting),
            (self._earlier, old._earlier, _sequencing),
        ):
            for (name, same), entries in theirs.items():
                rule, before = self._by_name.get(name), old._by_name.get(name)
                if rule is not None and before is not None and spec_of(rule) == spec_of(before):
                    mine[(name, same)] = entries

    def followed(self, event: CloudEvent) -> list[tuple[str, str]]:
        """The absence timers (rule, key) this event, as a follower, ends."""
        flat = event.flat()
        found = []
        for rule in self._absence:
            assert rule.not_followed_by is not None
            if all(m.matches(flat) for m in rule.not_followed_by.matchers):
                found.append((rule.name, absence_key(rule, flat)))
        return found

    def follower_held(self, rule: Rule, first: CloudEvent, facts: HeldFacts) -> bool:
        """Whether an `event` fact the engine holds is a follower of `first` for `rule`
        (its `same` fields equal, and not older than `first` when both have a time):
        one that came before the first did (out of order), or came while no leader ran."""
        spec = rule.not_followed_by
        assert spec is not None
        wanted = first.flat()
        start = first.time.timestamp() if first.time is not None else None
        for fact in facts.named("event"):
            fields = fact_flat(fact)
            if not all(m.matches(fields) for m in spec.matchers):
                continue
            if any(fields.get(n, "") != wanted.get(n, "") for n in spec.same):
                continue
            at = fields.get("time")
            if start is not None and at and float(at) < start:
                continue  # a follower of an earlier first event
            return True
        return False

    def match(
        self, event: CloudEvent, facts: HeldFacts, alerts: Callable[[], list[Alert]]
    ) -> tuple[list[Match], list[Absence]]:
        """The event rules that hold for `event`, and the absence timers it starts."""
        if event.source in (SCHEDULE_SOURCE, ABSENCE_SOURCE):
            return self._own_rule(event, facts), []  # for the rule it names only
        now = self._clock()
        flat = event.flat()
        alert = event.as_alert()
        matches: list[Match] = []
        absences: list[Absence] = []
        self._remember(event, flat, now)
        for rule, matchers in self._candidates(event):
            if not _all(matchers, flat):
                continue
            if self._failure(rule, alert, facts) is not None:
                continue
            if rule.count is not None and not self._counted(rule, event, flat, now):
                continue
            if rule.after is not None and not self._preceded(rule, event, flat, now, alerts):
                continue
            spec = rule.not_followed_by
            if spec is not None:
                if not self.follower_held(rule, event, facts):
                    due = _time_of(event, now) + spec.within
                    absences.append(Absence(rule.name, absence_key(rule, flat), due, event))
                continue
            matches.append(Match(rule, alert, _joined(rule, alert, facts), event.context()))
        return _ordered(matches), absences

    def _own_rule(self, event: CloudEvent, facts: HeldFacts) -> list[Match]:
        """A schedule's tick, or an absence, is for the one rule it names."""
        rule = self._by_name.get(event.subject or "")
        if rule is None:
            return []
        first = event
        if event.source == ABSENCE_SOURCE:
            if rule.not_followed_by is None:
                return []
            first = CloudEvent.model_validate((event.data or {}).get("event", {}))
        elif rule.schedule is None:
            return []
        alert = first.as_alert()
        if self._failure(rule, alert, facts) is not None:
            return []
        return [Match(rule, alert, _joined(rule, alert, facts), first.context())]

    @staticmethod
    def _failure(rule: Rule, alert: Alert, facts: HeldFacts) -> str | None:
        for condition in rule.when:
            if not any(fact_meets(f, condition, alert) for f in facts.named(condition.fact)):
                return f"when: no fact {condition.fact} with {condition.where}"
        for condition in rule.unless:
            if any(fact_meets(f, condition, alert) for f in facts.named(condition.fact)):
                return f"unless: a fact {condition.fact} holds"
        return None

    def _remember(self, event: CloudEvent, flat: dict[str, str], now: float) -> None:
        """Keep the event as a possible predecessor of the `after` rules it may come first in."""
        for other in self._sequence:
            after = other.after
            if after is not None and _all(after.matchers, flat):
                key = (other.name, tuple(flat.get(n, "") for n in after.same))
                kept = [e for e in self._earlier.get(key, []) if e[0] >= now - after.within]
                self._earlier[key] = [*kept, (_time_of(event, now), event.digest)]

    def _counted(self, rule: Rule, event: CloudEvent, flat: dict[str, str], now: float) -> bool:
        spec = rule.count
        assert spec is not None
        key = (rule.name, tuple(flat.get(n, "") for n in spec.same))
        at = _time_of(event, now)
        window = [
            e
            for e in self._windows.get(key, [])
            if abs(e[0] - at) < spec.within and e[1] != event.digest
        ]
        window.append((at, event.digest))
        self._windows[key] = window
        return len(window) >= spec.at_least

    def _preceded(
        self,
        rule: Rule,
        event: CloudEvent,
        flat: dict[str, str],
        now: float,
        alerts: Callable[[], list[Alert]],
    ) -> bool:
        after = rule.after
        assert after is not None
        same = tuple(flat.get(n, "") for n in after.same)
        at = _time_of(event, now)
        for t, digest in self._earlier.get((rule.name, same), []):
            if 0 <= at - t <= after.within and digest != event.digest:
                return True
        # An alert may come first too: one firing that matches, with the same labels.
        return any(
            _all(after.matchers, a.labels)
            and tuple(a.labels.get(n, "") for n in after.same) == same
            and 0 <= at - a.starts_at.timestamp() <= after.within
            for a in alerts()
        )


def _counting(rule: Rule) -> tuple[object, ...]:
    """What decides which events a rule's `count` window holds."""
    return (rule.event, rule.when, rule.unless, rule.count)


def _sequencing(rule: Rule) -> tuple[object, ...]:
    """What decides which events are a rule's `after` predecessors."""
    return (rule.after,)


def fact_flat(fact: Fact) -> dict[str, str]:
    """An `event` fact's fields as `CloudEvent.flat` names them (its data under `data.`)."""
    attributes = ("type", "source", "subject", "id", "time")
    return {(k if k in attributes else f"data.{k}"): v for k, v in fact.fields.items()}


def _all(matchers: Iterable[Matcher], fields: Mapping[str, str]) -> bool:
    return all(m.matches(fields) for m in matchers)


def _joined(rule: Rule, alert: Alert, facts: HeldFacts) -> dict[str, Mapping[str, str]]:
    joined: dict[str, Mapping[str, str]] = {}
    for condition in rule.when:
        found = next(
            (f for f in facts.named(condition.fact) if fact_meets(f, condition, alert)), None
        )
        if found is not None:
            joined[condition.fact] = found.fields
    return joined


def _ordered(matches: list[Match]) -> list[Match]:
    return sorted(matches, key=lambda m: -m.rule.priority)
