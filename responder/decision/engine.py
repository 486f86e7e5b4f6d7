"""The decision engine: the only module that imports durable_rules.

Rules compile to one durable_rules ruleset. A firing alert becomes a fact; its resolution
retracts it. Facts asserted by rules, configuration or events are facts too, and rules join
them with alerts (`when`, `unless`), so asserting one can make other rules hold: forward
chaining, done by the Rete network.

Where durable_rules falls short, this module does the work itself and says so:

- Regex matchers are evaluated with Python's `re` (anchored, as Alertmanager does), because
  durable_rules' own regex dialect silently misreads escapes such as `\\.`. Each result rides
  on the alert's fact as a field.
- State is partitioned (`sid`) by fingerprint so that no partition nears durable_rules'
  rejection threshold. Facts are asserted into every partition, so joins hold everywhere.
- `count` windows, `firing_for` and fact TTLs are kept here, bounded, on a clock the engine
  loop drives; they need no durable_rules timer threads.
"""

from __future__ import annotations

import heapq
import logging
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine
from durable import engine as durable

from responder import metrics
from responder.decision.conditions import fact_meets
from responder.decision.matchers import Matcher, MatchOp
from responder.decision.rules import FactCondition, Rule, RuleBook
from responder.events.facts import Fact
from responder.events.webhook import Alert
from responder.exceptions import ResponderError

log = logging.getLogger(__name__)

RESOLVED = "resolved"
GENERIC = "*"  # the group of rules that do not require one alertname


@dataclass
class _Group:
    """One durable_rules ruleset: the rules for one alertname, or the generic ones."""

    ruleset: str
    facts: frozenset[str]  # fact names its rules join, given to each partition it uses
    primed: set[str] = field(default_factory=set)


def _required_alertname(rule: Rule) -> str | None:
    for matcher in rule.matchers:
        if matcher.name == "alertname" and matcher.op is MatchOp.EQ:
            return matcher.value
    return None


def _fact_message(fact: Fact, sid: str) -> dict[str, Any]:
    message = {"sid": sid, "id": fact.id, "kind": "fact", "name": fact.name}
    message.update({f"f_{k}": v for k, v in fact.fields.items()})
    return message


@dataclass(frozen=True)
class Match:
    """A rule whose conditions hold for an alert (or event), with the facts `when` joined."""

    rule: Rule
    alert: Alert
    facts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    event: Mapping[str, Any] | None = None  # an event rule's event (`decision.event_rules`)


class EngineRejected(ResponderError):
    """durable_rules refused a message as already observed (its state table is full)."""


class _Host(durable.Host):  # type: ignore[misc]
    """A durable_rules host whose actions only record which rule fired for which messages."""

    def __init__(self, on_fire: Callable[[str, Any], None]) -> None:
        self._on_fire = on_fire
        super().__init__()

    def _run(self) -> None:
        # durable_rules starts timer threads that may run actions on another thread.
        # The engine loop drives every assert itself, so actions run inline, in order.
        return None

    def get_action(self, action_name: str) -> Any:
        def action(c: Any) -> None:
            try:
                self._on_fire(action_name, c)
            except Exception:
                # durable_rules swallows exceptions raised in actions; we must not.
                metrics.ENGINE_ERRORS.labels(kind="action").inc()
                log.exception("rule action %s failed", action_name)

        return action


class Engine:
    """Holds firing alerts and facts; tells which rules hold as they change."""

    def __init__(
        self, book: RuleBook, partitions: int = 16, clock: Callable[[], float] = time.time
    ) -> None:
        self.book = book
        self._clock = clock
        self._partitions = [f"p{i}" for i in range(partitions)]
        self._rules = {rule.name: rule for rule in book.alert_rules}
        self._waiting_rules = [r for r in book.alert_rules if r.firing_for is not None]
        self._order = {rule.name: i for i, rule in enumerate(book.alert_rules)}
        self._labels = sorted(self._referenced_labels())
        self._regexes: list[Matcher] = []
        self._alerts: dict[str, Alert] = {}
        self._arrival: dict[str, int] = {}
        self._arrived = 0
        self._facts: dict[str, Fact] = {}
        self._named: dict[str, dict[str, Fact]] = {}  # the same facts, by name
        self._fact_expiry: list[tuple[float, str]] = []
        # (when, rule, incident): firing_for rules coming due
        self._due: list[tuple[float, str, str]] = []
        self._windows: dict[tuple[str, tuple[str, ...]], list[tuple[float, str]]] = {}
        # Sequences: for each rule with `after`, the starts of the alerts that may precede,
        # by their `same` labels; pruned by `tick` once out of every window.
        self._sequence_rules = [r for r in book.alert_rules if r.after is not None]
        self._predecessors: dict[tuple[str, tuple[str, ...]], list[tuple[float, str]]] = {}
        self._predecessors_pruned = 0.0
        self._fired: list[tuple[str, Any]] = []
        self._host = _Host(lambda rule, c: self._fired.append((rule, c)))
        # Rules are grouped by the alertname they require, one durable_rules ruleset per
        # group: an alert meets only its own group's rules (and the generic group's), so its
        # cost in time and native memory does not grow with the size of the whole library.
        by_name: dict[str, list[tuple[int, Rule]]] = {}
        resolved: dict[str, Any] = {}
        for i, rule in enumerate(book.alert_rules):
            if rule.status == "resolved":
                resolved[f"r{i}"] = self._compile(rule)
            else:
                by_name.setdefault(_required_alertname(rule) or GENERIC, []).append((i, rule))
        self._groups: dict[str, _Group] = {}
        rulesets: dict[str, Any] = {}
        for n, (alertname, members) in enumerate(sorted(by_name.items())):
            group = _Group(
                f"g{n}",
                frozenset(c.fact for _, r in members for c in (*r.when, *r.unless)),
            )
            self._groups[alertname] = group
            rulesets[group.ruleset] = {f"r{i}": self._compile(r) for i, r in members}
        self._has_resolved = bool(resolved)
        if resolved:
            rulesets[RESOLVED] = resolved
        self._uncompiled: dict[str, Any] | None = rulesets or None  # see `compile`

    def compile(self) -> None:
        """Make durable_rules' rulesets (~85 KB of native memory per group), at the latest on
        first use: an engine never used (the loop's first, if rebuilt first) makes none."""
        if self._uncompiled is not None:
            self._host.set_rulesets(self._uncompiled)
            self._uncompiled = None

    def close(self) -> None:
        """Hand durable_rules' rulesets back; the engine cannot be used afterwards."""
        for ruleset in self._host._ruleset_list:
            durable_rules_engine.delete_ruleset(ruleset._handle)
        self._host._ruleset_list.clear()
        self._host._ruleset_directory.clear()
        self._groups.clear()
        self._has_resolved = False

    # --- what is held --------------------------------------------------------------------

    @property
    def fact_count(self) -> int:
        """Firing alerts held."""
        return len(self._alerts)

    def facts(self) -> list[Fact]:
        return list(self._facts.values())

    def facts_named(self, name: str) -> list[Fact]:
        return list(self._named.get(name, {}).values())

    def holds_alert(self, incident: str) -> bool:
        return incident in self._alerts

    def all_held(self) -> list[Alert]:
        """Every firing alert the engine holds."""
        return list(self._alerts.values())

    def held_alerts(self, fingerprint: str) -> list[Alert]:
        """Firing alerts held with this fingerprint (one per incident)."""
        return [a for a in self._alerts.values() if a.fingerprint == fingerprint]

    # --- alerts --------------------------------------------------------------------------

    def assert_alert(self, alert: Alert) -> list[Match]:
        """Hold a firing alert; return the rules that now hold for it."""
        incident = alert.incident
        if incident in self._alerts:
            return []
        self._alerts[incident] = alert
        self._note_predecessor(alert)
        self._arrived += 1
        self._arrival[incident] = self._arrived
        for rule in self._waiting_rules:
            assert rule.firing_for is not None
            due = alert.starts_at.timestamp() + rule.firing_for
            heapq.heappush(self._due, (due, rule.name, incident))
        groups = self._groups_of(alert)
        if not groups:
            return []
        sid = self._sid(alert)
        message = self._alert_message(alert, sid)
        for group in groups:
            self._prime(group, sid)
        done: list[_Group] = []
        try:
            for group in groups:
                self._send(self._host.assert_fact, group.ruleset, message)
                done.append(group)
        except EngineRejected:
            for group in done:
                self._send(
                    self._host.retract_fact, group.ruleset, {"sid": sid, "id": message["id"]}
                )
            self._collect()
            del self._alerts[incident]
            del self._arrival[incident]
            raise
        return self._collect()

    def retract_alert(self, alert: Alert) -> list[Match]:
        """Let go of a resolved alert; return the rules on resolutions that hold for it."""
        held = self._alerts.pop(alert.incident, None)
        self._arrival.pop(alert.incident, None)
        if held is not None:
            message = {"sid": self._sid(held), "id": f"alert:{held.incident}"}
            for group in self._groups_of(held):
                self._send(self._host.retract_fact, group.ruleset, message)
            self._collect()  # retraction fires nothing, but keep the buffer clean
        if not self._has_resolved:
            return []
        message = self._alert_message(alert, "resolved")
        message["id"] = f"resolved:{alert.incident}"
        self._send(self._host.post, RESOLVED, message)
        return self._collect()

    # --- facts ---------------------------------------------------------------------------

    def assert_fact(self, fact: Fact) -> list[Match]:
        """Hold a fact in every partition (a new expiry refreshes a held one)."""
        known = self._facts.get(fact.id)
        self._facts[fact.id] = self._named.setdefault(fact.name, {})[fact.id] = fact
        heapq.heappush(self._fact_expiry, (fact.expires_at, fact.id))
        if known is not None:
            return []
        for group in self._groups.values():
            if fact.name in group.facts:
                for sid in group.primed:
                    self._send(self._host.assert_fact, group.ruleset, _fact_message(fact, sid))
        return self._collect()

    def retract_facts(self, condition: FactCondition, alert: Alert | None) -> list[Fact]:
        """Retract every held fact that meets `condition` (joined with `alert`)."""
        gone = [fact for fact in self._facts.values() if fact_meets(fact, condition, alert)]
        for fact in gone:
            self._drop_fact(fact.id)
        return gone

    # --- time ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> tuple[list[Match], list[Fact]]:
        """Expire facts and fire `firing_for` rules that came due; return both."""
        now = self._clock() if now is None else now
        expired: list[Fact] = []
        while self._fact_expiry and self._fact_expiry[0][0] <= now:
            _, fid = heapq.heappop(self._fact_expiry)
            fact = self._facts.get(fid)
            if fact is not None and fact.expires_at <= now:
                self._drop_fact(fid)
                expired.append(fact)
        if self._predecessors and now - self._predecessors_pruned >= 10:
            self._forget_predecessors(now)
            self._predecessors_pruned = now
        due: list[Match] = []
        while self._due and self._due[0][0] <= now:
            _, rule_name, incident = heapq.heappop(self._due)
            alert = self._alerts.get(incident)
            rule = self._rules.get(rule_name)
            if alert is not None and rule is not None and self._holds_now(rule, alert):
                due.append(Match(rule, alert, self._joined(rule, alert)))
        return self._ordered(due), expired

    def next_timer(self) -> float | None:
        """When `tick` has something to do next (a `firing_for` rule due, a fact expiring);
        None when nothing waits."""
        times = [heap[0][0] for heap in (self._due, self._fact_expiry) if heap]
        return min(times) if times else None

    # --- internals -----------------------------------------------------------------------

    def _drop_fact(self, fid: str) -> None:
        fact = self._facts.pop(fid, None)
        if fact is None:
            return
        del self._named[fact.name][fid]
        for group in self._groups.values():
            if fact.name in group.facts:
                for sid in group.primed:
                    self._send(self._host.retract_fact, group.ruleset, {"sid": sid, "id": fid})
        self._collect()

    def _groups_of(self, alert: Alert) -> list[_Group]:
        found = [self._groups.get(alert.alertname), self._groups.get(GENERIC)]
        return [g for g in found if g is not None]

    def _prime(self, group: _Group, sid: str) -> None:
        """Give a partition the facts its group's rules join, before its first alert."""
        if sid in group.primed:
            return
        group.primed.add(sid)
        # No alert of this group is in this partition yet, so these asserts fire nothing.
        for fact in self._facts.values():
            if fact.name in group.facts:
                self._send(self._host.assert_fact, group.ruleset, _fact_message(fact, sid))

    def _send(self, method: Callable[..., Any], ruleset: str, message: dict[str, Any]) -> None:
        self.compile()
        try:
            method(ruleset, message)
        except durable.MessageNotHandledException:
            pass  # no rule holds: normal control flow in durable_rules
        except durable.MessageObservedException:
            metrics.ENGINE_ERRORS.labels(kind="rejected").inc()
            log.error("durable_rules rejected %s as already observed", message.get("id"))
            raise EngineRejected(str(message.get("id"))) from None

    def _collect(self) -> list[Match]:
        fired, self._fired = self._fired, []
        matches: list[Match] = []
        for rule_name, c in fired:
            rule = self._rules[rule_name]
            message = c.a if rule.status == "firing" else c.m
            incident = str(message["id"]).split(":", 1)[1]
            alert = self._alerts.get(incident)
            if alert is None and rule.status == "resolved":
                alert = Alert.model_validate_json(message["alert"])
            if alert is None:
                continue
            if rule.firing_for is not None and not self._has_fired_long_enough(rule, alert):
                continue  # tick() fires it when due
            joined = {
                condition.fact: _fields_of(getattr(c, f"w{i}"))
                for i, condition in enumerate(rule.when)
            }
            if rule.count is not None and not self._window_full(rule, alert):
                continue
            if rule.after is not None and not self._preceded(rule, alert):
                continue
            matches.append(Match(rule, alert, joined))
        return self._ordered(matches)

    def _ordered(self, matches: list[Match]) -> list[Match]:
        """Higher priority first, then rule order, then the order the alerts arrived in."""
        return sorted(
            matches,
            key=lambda m: (
                -m.rule.priority,
                self._order[m.rule.name],
                self._arrival.get(m.alert.incident, 0),
            ),
        )

    def _has_fired_long_enough(self, rule: Rule, alert: Alert) -> bool:
        assert rule.firing_for is not None
        return alert.starts_at.timestamp() + rule.firing_for <= self._clock()

    def _holds_now(self, rule: Rule, alert: Alert) -> bool:
        """Re-check a rule for a held alert (used when a `firing_for` rule comes due)."""
        if rule.count is not None:
            self._window_full(rule, alert)  # count this alert in its window first
        return self._first_failure(rule, alert) is None

    def held(self, incident: str) -> Alert | None:
        """The firing alert held for this incident; None once it resolved."""
        return self._alerts.get(incident)

    def holding(self, alert: Alert) -> list[Match]:
        """The rules that hold for a held alert now, in priority order (to decide again)."""
        matches = [
            Match(rule, alert, self._joined(rule, alert))
            for rule, failure in self.explain(alert)
            if failure is None
        ]
        return self._ordered(matches)

    def explain(self, alert: Alert) -> list[tuple[Rule, str | None]]:
        """For each rule, None if it holds for `alert` now, else the first condition that fails."""
        return [(rule, self._first_failure(rule, alert)) for rule in self.book.alert_rules]

    def _first_failure(self, rule: Rule, alert: Alert) -> str | None:
        if rule.status != alert.status:
            return f"the rule is for {rule.status} alerts; this one is {alert.status}"
        for matcher in rule.matchers:
            if not matcher.matches(alert.labels):
                value = alert.labels.get(matcher.name, "")
                return f"{matcher} does not hold: {matcher.name}={value!r}"
        for matcher in rule.annotation_matchers:
            if not matcher.matches(alert.annotations):
                value = alert.annotations.get(matcher.name, "")
                return f"annotation {matcher} does not hold: {matcher.name}={value!r}"
        failure = self._fact_failure(rule, alert)
        if failure is not None:
            return failure
        if rule.count is not None:
            seen = self._window_count(rule, alert)
            if seen < rule.count.at_least:
                return (
                    f"count: {seen} of {rule.count.at_least} alerts within "
                    f"{rule.count.within:.0f}s (same {rule.count.same})"
                )
        if rule.after is not None and not self._preceded(rule, alert):
            return (
                f"after: no alert with {rule.after.match} (same {rule.after.same}) started "
                f"within {rule.after.within:.0f}s before this one"
            )
        if rule.firing_for is not None and not self._has_fired_long_enough(rule, alert):
            fired = self._clock() - alert.starts_at.timestamp()
            return f"firing_for: fired {fired:.0f}s of {rule.firing_for:.0f}s"
        return None

    def still_holds(self, match: Match) -> bool:
        """Whether a match's `when` and `unless` still hold for the facts held now.

        Acting on one match can assert or retract facts that another, already collected,
        match depends on; that match must then be dropped, as Rete drops an activation.
        """
        return self._fact_failure(match.rule, match.alert) is None

    def _joined(self, rule: Rule, alert: Alert) -> dict[str, Mapping[str, str]]:
        """The facts a rule's `when` joins for an alert, by fact name (as Rete would give)."""
        joined: dict[str, Mapping[str, str]] = {}
        for condition in rule.when:
            for fact in self._facts.values():
                if fact_meets(fact, condition, alert):
                    joined[condition.fact] = fact.fields
                    break
        return joined

    def _fact_failure(self, rule: Rule, alert: Alert) -> str | None:
        """The first `when` or `unless` condition that fails for `alert`, if any."""
        for condition in rule.when:
            if not any(fact_meets(f, condition, alert) for f in self.facts_named(condition.fact)):
                return f"when: no fact {condition.fact} with {condition.where}"
        for condition in rule.unless:
            for fact in self.facts_named(condition.fact):
                if fact_meets(fact, condition, alert):
                    return f"unless: fact {fact.name} {dict(fact.fields)} holds"
        return None

    def _window_full(self, rule: Rule, alert: Alert) -> bool:
        """Add the alert to its window; True once `at_least` alerts started within `within`.

        Windows go by the alerts' own start times, not by when they arrived, so a rebuild
        that re-reads day-old alerts cannot make them count as a burst with a new one.
        """
        assert rule.count is not None
        group = tuple(alert.labels.get(name, "") for name in rule.count.same)
        key = (rule.name, group)
        started = alert.starts_at.timestamp()
        window = [
            (t, incident)
            for t, incident in self._windows.get(key, ())
            if t > started - rule.count.within and incident != alert.incident
        ]
        window.append((started, alert.incident))
        self._windows[key] = window
        return self._window_count(rule, alert) >= rule.count.at_least

    def _window_count(self, rule: Rule, alert: Alert) -> int:
        assert rule.count is not None
        group = tuple(alert.labels.get(name, "") for name in rule.count.same)
        started = alert.starts_at.timestamp()
        return sum(
            1
            for t, _ in self._windows.get((rule.name, group), ())
            if abs(t - started) < rule.count.within
        )

    def _note_predecessor(self, alert: Alert) -> None:
        """Remember the alert for every sequence rule it may come first in."""
        for rule in self._sequence_rules:
            after = rule.after
            assert after is not None
            if all(m.matches(alert.labels) for m in after.matchers):
                group = tuple(alert.labels.get(name, "") for name in after.same)
                entry = (alert.starts_at.timestamp(), alert.incident)
                self._predecessors.setdefault((rule.name, group), []).append(entry)

    def _preceded(self, rule: Rule, alert: Alert) -> bool:
        """Whether another alert of the rule's `after` started at most `within` before."""
        after = rule.after
        assert after is not None
        group = tuple(alert.labels.get(name, "") for name in after.same)
        started = alert.starts_at.timestamp()
        return any(
            0 <= started - t <= after.within and incident != alert.incident
            for t, incident in self._predecessors.get((rule.name, group), ())
        )

    def _forget_predecessors(self, now: float) -> None:
        """Drop the starts no alert starting from now on could follow."""
        within = {r.name: r.after.within for r in self._sequence_rules if r.after}
        for key in list(self._predecessors):
            kept = [e for e in self._predecessors[key] if e[0] >= now - within[key[0]]]
            if kept:
                self._predecessors[key] = kept
            else:
                del self._predecessors[key]

    def _sid(self, alert: Alert) -> str:
        return self._partitions[zlib.crc32(alert.fingerprint.encode()) % len(self._partitions)]

    def _alert_message(self, alert: Alert, sid: str) -> dict[str, Any]:
        message: dict[str, Any] = {"sid": sid, "id": f"alert:{alert.incident}", "kind": "alert"}
        labels = alert.labels
        for name in self._labels:
            message[f"l_{name}"] = labels.get(name, "")
        for i, matcher in enumerate(self._regexes):
            source = alert.annotations if matcher.name.startswith("@") else labels
            probe = Matcher(matcher.name.lstrip("@"), MatchOp.RE, matcher.value, matcher.regex)
            message[f"x_{i}"] = 1 if probe.matches(source) else 0
        if sid == "resolved":
            message["alert"] = alert.model_dump_json(by_alias=True)
        return message

    def _referenced_labels(self) -> set[str]:
        names: set[str] = set()
        for rule in self.book.alert_rules:
            names.update(m.name for m in rule.matchers if not m.op.is_regex)
            for condition in (*rule.when, *rule.unless):
                names.update(t.label for t in condition.tests if t.label)
        return names

    def _compile(self, rule: Rule) -> dict[str, Any]:
        alert_tests: list[dict[str, Any]] = [{"kind": "alert"}]
        for matcher in rule.matchers:
            alert_tests.append(self._matcher_test(matcher, on_annotations=False))
        for matcher in rule.annotation_matchers:
            alert_tests.append(self._matcher_test(matcher, on_annotations=True))
        alias = "a" if rule.status == "firing" else "m"
        conditions: list[dict[str, Any]] = [{alias: {"$and": alert_tests}}]
        for i, condition in enumerate(rule.when):
            conditions.append({f"w{i}": {"$and": _fact_tests(condition)}})
        for i, condition in enumerate(rule.unless):
            conditions.append({f"u{i}$not": {"$and": _fact_tests(condition)}})
        return {"all": conditions, "run": rule.name}

    def _matcher_test(self, matcher: Matcher, *, on_annotations: bool) -> dict[str, Any]:
        if matcher.op.is_regex or on_annotations:
            # Every annotation test, and every regex, is evaluated in Python.
            name = f"@{matcher.name}" if on_annotations else matcher.name
            positive = Matcher(name, MatchOp.RE, _as_regex(matcher), matcher.regex)
            index = self._regex_index(positive)
            return {f"x_{index}": 0 if matcher.op.is_negative else 1}
        if matcher.op is MatchOp.EQ:
            return {f"l_{matcher.name}": matcher.value}
        return {"$neq": {f"l_{matcher.name}": matcher.value}}

    def _regex_index(self, matcher: Matcher) -> int:
        if matcher.regex is None:
            matcher = Matcher(matcher.name, matcher.op, matcher.value, re.compile(matcher.value))
        if matcher in self._regexes:
            return self._regexes.index(matcher)
        self._regexes.append(matcher)
        return len(self._regexes) - 1


def _as_regex(matcher: Matcher) -> str:
    return matcher.value if matcher.op.is_regex else re.escape(matcher.value)


def _fact_tests(condition: FactCondition) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = [{"kind": "fact"}, {"name": condition.fact}]
    for test in condition.tests:
        value: Any = {"a": f"l_{test.label}"} if test.label else test.value
        clause = {f"f_{test.field}": value}
        tests.append({"$neq": clause} if test.negative else clause)
    return tests


def _fields_of(message: Any) -> dict[str, str]:
    return {k[2:]: str(v) for k, v in message._d.items() if k.startswith("f_")}
