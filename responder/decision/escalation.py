"""The escalation ladder, and the `exhausted` fact at its top.

A remediation that completed while its alert keeps firing did not help: once the cooldown
is over, the rule decides again, a new attempt, until its guard's `max_attempts`. Then the
guard refuses, and the `exhausted` fact tells other rules to escalate (page, notify):

    when: [{fact: exhausted, where: ['rule="restart-crashed-service"',
                                     'instance="{{ alert.labels.instance }}"']}]
"""

from __future__ import annotations

from collections.abc import Mapping

from responder.decision.decisions import Decision
from responder.decision.engine import Engine
from responder.decision.rules import RuleBook
from responder.events.cloudevents import Outcome
from responder.events.facts import Fact

EXHAUSTED = "exhausted"
# The guard's refusal that means the ladder is climbed to its top.
TOP_OF_THE_LADDER = "max_attempts"


def climb_ladder(book: RuleBook, engine: Engine, outcome: Outcome, now: float) -> None:
    """After a completed run, have the engine decide again once the cooldown is over, if
    the alert still fires then and the rule allows more than one attempt."""
    rule = next((r for r in book.rules if r.name == outcome.rule), None)
    if outcome.state != "COMPLETED" or rule is None or rule.guard is None:
        return
    if (rule.guard.max_attempts or 1) > 1:
        engine.retry_after(rule.name, outcome.incident, now + rule.guard.cooldown + 1.0)


def exhausted_fact(decision: Decision, expires_at: float) -> Fact:
    """The fact a decision refused at the top of the ladder asserts: its alert's labels
    (those rules can join on) and the rule whose attempts ran out."""
    return Fact(
        EXHAUSTED,
        {**_joinable(decision.alert.labels), "rule": decision.rule},
        expires_at,
        source=f"rule:{decision.rule}",
    )


def _joinable(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels usable as fact fields (the ones rules can join on)."""
    return {k: v for k, v in labels.items() if k.isidentifier() and len(k) <= 63}
