"""How the engine joins a fact with an alert: a rule's `when`, `unless` and `retract`.

The engine evaluates conditions here where durable_rules cannot (re-checking a match, joins
for timers, retractions), and a manual run asks the same question of its rule's `unless`.
"""

from __future__ import annotations

from responder.decision.rules import FactCondition
from responder.events.facts import Fact
from responder.events.webhook import Alert


def fact_meets(fact: Fact, condition: FactCondition, alert: Alert | None) -> bool:
    """Whether `fact` satisfies a `when`/`unless`/`retract` condition joined with `alert`."""
    if fact.name != condition.fact:
        return False
    for test in condition.tests:
        if test.label is not None:
            if alert is None:
                return False
            expected = alert.labels.get(test.label, "")
        else:
            expected = test.value
        equal = fact.fields.get(test.field, "") == expected
        if equal == test.negative:
            return False
    return True
