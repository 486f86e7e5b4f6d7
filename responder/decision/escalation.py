"""The escalation ladder, and the `exhausted` fact at its top.

A remediation that completed while its alert keeps firing did not help: once the cooldown
is over, the rule decides again, a new attempt, until its guard's `max_attempts`. A run that
was cancelled or crashed (its runner lost) did not get to help: once the key's cooldown after
a failure is over, the rule decides again too. Then the guard refuses at `max_attempts`, and
the `exhausted` fact tells other rules to escalate (page, notify):

    when: [{fact: exhausted, where: ['rule="restart-crashed-service"',
                                     'instance="{{ alert.labels.instance }}"']}]

The next attempt is a durable timer (`storage.timers`), set in the transaction that takes in
the run's outcome; convergence asks the rule again when it is due, if the alert still fires
and the rule still holds then (a reload may have changed it).
A run that asked for approval and did not get it (rejected, or unanswered until it ended) is
not tried again: a person said no, or nobody said yes; the `outcome` fact lets rules escalate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from responder.decision.decisions import Decision
from responder.decision.rules import RuleBook
from responder.events.cloudevents import Outcome
from responder.events.facts import Fact

EXHAUSTED = "exhausted"
# The guard's refusal that means the ladder is climbed to its top.
TOP_OF_THE_LADDER = "max_attempts"
# Final states of a run that did not get to act (cancelled, its runner lost): tried again.
INTERRUPTED = frozenset({"CANCELLED", "CRASHED"})
# The approval of a run that asked for one and may be tried again (`storage.approvals`).
APPROVED = "approved"
# A retry comes this long after the cooldown ends, so the guard never sees the key cooling.
MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class NextAttempt:
    """A rule to decide again for an incident at a time, if the alert still fires then."""

    rule: str
    incident: str
    at: float
    after: int  # the decision whose run ended
    reason: str  # why it is decided again, recorded with the new decision


def next_attempt(book: RuleBook, outcome: Outcome, now: float) -> NextAttempt | None:
    """The attempt that follows a run's end, if any: after a completed run whose rule allows
    more than one attempt, or after a run that was cancelled or crashed."""
    rule = next((r for r in book.rules if r.name == outcome.rule), None)
    if rule is None or rule.run is None or outcome.approval not in (None, APPROVED):
        return None
    guard = rule.guard
    cooldown = guard.cooldown if guard is not None else 0.0
    if outcome.state == "COMPLETED":
        if guard is None or (guard.max_attempts or 1) <= 1:
            return None
        why = f"the alert still fires after decision {outcome.decision_id} completed"
    elif outcome.state in INTERRUPTED:
        if guard is not None and guard.cooldown_failed is not None:
            cooldown = guard.cooldown_failed
        why = f"decision {outcome.decision_id}'s run ended {outcome.state}"
    else:
        return None  # FAILED: the `outcome` fact is for rules to act on
    at = now + cooldown + MARGIN_SECONDS
    return NextAttempt(rule.name, outcome.incident, at, outcome.decision_id, f"re-examined: {why}")


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
