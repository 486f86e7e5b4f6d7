"""The decision engine: the only module that imports durable_rules.

Rules compile to one durable_rules ruleset. A firing alert becomes a fact; a resolved alert
retracts it. Label equality is left to the Rete network. Regex matchers are evaluated here with
Python's `re` (anchored, as Alertmanager does) because durable_rules' own regex dialect
silently misreads escapes such as `\\.`; the fact carries each regex result as a field.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

from durable import engine as durable

from responder import metrics
from responder.matchers import Matcher, MatchOp
from responder.models import Alert
from responder.rules import Rule, RuleBook

log = logging.getLogger(__name__)

RULESET = "responder"


@dataclass(frozen=True)
class Match:
    """A rule whose conditions hold for an alert."""

    rule: Rule
    alert: Alert


class _Host(durable.Host):  # type: ignore[misc]
    """A durable_rules host whose actions only record which rule fired for which fact."""

    def __init__(self, on_fire: Any) -> None:
        self._on_fire = on_fire
        super().__init__()

    def _run(self) -> None:
        # durable_rules starts timer threads that may run actions on another thread.
        # The engine loop drives every assert itself, so actions run inline, in order.
        return None

    def get_action(self, action_name: str) -> Any:
        def action(c: Any) -> None:
            try:
                self._on_fire(action_name, c.m["id"])
            except Exception:
                # durable_rules swallows exceptions raised in actions; we must not.
                metrics.ENGINE_ERRORS.labels(kind="action").inc()
                log.exception("rule action %s failed", action_name)

        return action


class Engine:
    """Holds firing alerts as facts and tells which rules they satisfy."""

    def __init__(self, book: RuleBook, partitions: int = 64) -> None:
        self.book = book
        self._partitions = partitions
        self._rules = {rule.name: rule for rule in book.rules}
        self._labels: list[str] = sorted(
            {m.name for rule in book.rules for m in rule.matchers if not m.op.is_regex}
        )
        self._regexes: list[Matcher] = []
        self._alerts: dict[str, Alert] = {}
        self._fired: list[tuple[str, str]] = []
        self._host = _Host(lambda rule, fact_id: self._fired.append((rule, fact_id)))
        definition = {f"r{i}": self._compile(rule) for i, rule in enumerate(book.rules)}
        if definition:
            self._host.set_rulesets({RULESET: definition})

    @property
    def fact_count(self) -> int:
        return len(self._alerts)

    def assert_alert(self, alert: Alert) -> list[Match]:
        """Add a firing alert as a fact; return the rules it satisfies, in rule order."""
        fact_id = alert.incident
        if fact_id in self._alerts or not self._rules:
            return []
        self._alerts[fact_id] = alert
        self._fired.clear()
        try:
            self._host.assert_fact(RULESET, self._fact(alert))
        except durable.MessageNotHandledException:
            pass  # no rule holds: normal
        except durable.MessageObservedException:
            metrics.ENGINE_ERRORS.labels(kind="rejected").inc()
            log.error("engine rejected fact for alert %s as already observed", fact_id)
        fired = {name for name, fid in self._fired if fid == fact_id}
        return [Match(rule, alert) for rule in self.book.rules if rule.name in fired]

    def retract_alert(self, alert: Alert) -> bool:
        """Remove the fact of a resolved alert; False if it was not held."""
        fact_id = alert.incident
        held = self._alerts.pop(fact_id, None)
        if held is None or not self._rules:
            return False
        try:
            self._host.retract_fact(RULESET, {"sid": self._sid(held), "id": fact_id})
        except (durable.MessageNotHandledException, durable.MessageObservedException):
            pass
        return True

    def _sid(self, alert: Alert) -> str:
        # Partitioned state keeps durable_rules far from its per-sid rejection threshold.
        return f"p{zlib.crc32(alert.fingerprint.encode()) % self._partitions}"

    def _fact(self, alert: Alert) -> dict[str, Any]:
        fact: dict[str, Any] = {"sid": self._sid(alert), "id": alert.incident, "kind": "alert"}
        labels = alert.labels
        for name in self._labels:
            fact[f"l_{name}"] = labels.get(name, "")
        for i, matcher in enumerate(self._regexes):
            fact[f"x_{i}"] = 1 if matcher.matches(labels) else 0
        return fact

    def _compile(self, rule: Rule) -> dict[str, Any]:
        conditions: list[dict[str, Any]] = [{"kind": "alert"}]
        for matcher in rule.matchers:
            if matcher.op.is_regex:
                # Store the positive regex; the condition asks for its result.
                positive = Matcher(matcher.name, MatchOp.RE, matcher.value, matcher.regex)
                index = self._regex_index(positive)
                conditions.append({f"x_{index}": 0 if matcher.op.is_negative else 1})
            elif matcher.op is MatchOp.EQ:
                conditions.append({f"l_{matcher.name}": matcher.value})
            else:
                conditions.append({"$neq": {f"l_{matcher.name}": matcher.value}})
        return {"all": [{"m": {"$and": conditions}}], "run": rule.name}

    def _regex_index(self, matcher: Matcher) -> int:
        for i, known in enumerate(self._regexes):
            if known == matcher:
                return i
        self._regexes.append(matcher)
        return len(self._regexes) - 1
