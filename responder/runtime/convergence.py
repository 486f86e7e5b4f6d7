"""Convergence: an incident the guard refused is decided again once what refused it clears.

Level-triggered, from the store: the `incidents` table says what each firing incident waits
for (`storage.incidents`), and the engine loop's tick asks it which blocks have cleared — a
guard name no longer held (its run ended: `control.leases.finish`, or its lease expired), a
cooldown or budget window now past, the pause lifted — or which incidents a reload or a
run's end (blast radius) marked `due`; and which durable timers (`storage.timers`: the
escalation ladder's next attempts) came due. Nothing is remembered only in memory, so a block
that clears, or a timer that comes due, while no leader runs is found by the next leader's
first tick.

Deciding again goes through the same pipeline and guard as the first decision: the guard's
key still keeps a second run from starting, a rule refused by `max_attempts` is not asked
again, and an incident that resolved meanwhile is not firing any more, so not asked.
"""

from __future__ import annotations

import time

from responder.decision.conditions import fact_meets
from responder.decision.decisions import Verdict
from responder.decision.engine import Engine, Match
from responder.decision.pipeline import Pipeline
from responder.events.facts import Fact
from responder.events.webhook import Alert
from responder.runtime import event_timers
from responder.runtime.work import Work
from responder.storage.incidents import HELD, DueIncident
from responder.storage.store import Store
from responder.storage.timers import SETTLE, Timer

# Verdicts of a rule for an incident after which it is asked again.
ASKED_AGAIN = {Verdict.UNMATCHED.value}
# Refusals after which it is not: they stay refused.
FINAL_REFUSALS = {"max_attempts"}


def why(row: DueIncident) -> str:
    """The reason a re-examined incident's new decisions are recorded with."""
    if row.due and row.waiting_on != "max_active":  # a run's end marks those due too
        return "re-examined: the rules changed"
    if row.waiting_on in HELD and row.block is not None:
        kind, _, name = row.block.partition(":")
        by = f" by decision {row.holder}" if row.holder else ""
        return f"re-examined: {kind} {name} released{by}"
    if row.waiting_on == "cooldown":
        return "re-examined: the cooldown ended"
    if row.waiting_on == "budget":
        return "re-examined: the budget window moved on"
    if row.waiting_on == "paused":
        return "re-examined: remediation resumed"
    if row.waiting_on == "max_active":
        return "re-examined: a run ended (max_active)"
    return "re-examined: the rules changed"


def asked_again(last: tuple[str, str | None] | None) -> bool:
    """Whether a rule is decided again, given its last verdict for the incident (None: it
    never decided): after a refusal that may clear, or a match a fact undid."""
    if last is None:
        return True
    verdict, refusal = last
    if verdict == Verdict.REFUSED.value:
        return refusal is not None and refusal not in FINAL_REFUSALS
    return verdict in ASKED_AGAIN


async def matches_for(store: Store, work: Work, pipeline: Pipeline, incident: str) -> list[Match]:
    """The rules to decide again for a still-firing incident (none if it resolved)."""
    alert = pipeline.engine.held(incident)
    if alert is None:
        return []
    last = await store.decisions.last_verdicts(work.conn, incident)
    return [m for m in pipeline.engine.holding(alert) if asked_again(last.get(m.rule.name))]


async def reexamine(
    store: Store,
    work: Work,
    pipeline: Pipeline,
    rows: list[DueIncident],
    now: float,
    deadline: float,
) -> int:
    """Decide due incidents again in `work`'s transaction, until `deadline` (a monotonic
    time; at least one); return how many were handled, the rest stay due.

    Each is first settled (nothing waiting, not due): if no rule acts any more it stays so,
    and whatever its new decisions say (running, waiting on another block) replaces that when
    `work` flushes. So an incident is asked once per clearing, never in a loop. One whose
    guard name an incident before it just took keeps waiting, for the new holder, unasked:
    a name freed with many incidents waiting for it costs one admission, not a refusal each;
    one whose key was freed with a cooldown waits for the cooldown, unasked too.
    """
    handled = 0
    for row in rows:
        if handled and time.monotonic() >= deadline:
            break
        handled += 1
        if (
            not row.due
            and row.waiting_on in HELD
            and row.block is not None
            and await _still_blocked(store, work, row, now)
        ):
            continue
        await store.incidents.settle(work.conn, [row.incident], now)
        matches = await matches_for(store, work, pipeline, row.incident)
        if not matches:
            continue
        work.because(why(row))
        try:
            await pipeline.again(work, matches)
        finally:
            work.because(None)
    return handled


async def fire(
    store: Store, work: Work, pipeline: Pipeline, due: list[Timer], now: float, deadline: float
) -> int:
    """Act on due timers in `work`'s transaction, until `deadline` (a monotonic time; at
    least one); return how many were handled (taken), the rest stay due.

    A timer decides its rule for its incident (a retry: again; a `settle`: at last), if the
    alert still fires and the rule still holds (a fact may have landed meanwhile, a reload
    may have removed or changed the rule); the guard decides as ever (`max_attempts` ends
    the ladder). A settled rule that no longer holds says why in the log.
    """
    taken: list[int] = []
    for timer in due:
        if taken and time.monotonic() >= deadline:
            break
        taken.append(timer.id)
        if timer.kind in event_timers.EVENT_TIMERS:
            await event_timers.fire(store, work, pipeline, timer, now)
            continue
        alert = pipeline.engine.held(timer.incident)
        if alert is None:
            continue  # resolved meanwhile: nothing to do
        await store.incidents.settle(work.conn, [timer.incident], now)
        matches = [m for m in pipeline.engine.holding(alert) if m.rule.name == timer.rule]
        if not matches:
            if timer.kind == SETTLE:
                why = {r.name: f for r, f in pipeline.engine.explain(alert)}.get(
                    timer.rule, "the rule is gone"
                )
                reason = f"settled; then it no longer held: {why}"
                work.record(alert, None, Verdict.UNMATCHED, reason, rule=timer.rule)
            continue
        work.because(timer.reason)
        try:
            await pipeline.again(work, matches)
        finally:
            work.because(None)
    await store.timers.take(work.conn, taken)
    return len(taken)


def unblocked(engine: Engine, gone: list[Fact]) -> list[tuple[Alert, set[str]]]:
    """The held alerts that a fact in `gone` kept from matching (an `unless` of a rule
    whose label matchers they meet was met by it), each with those rules' names."""
    names = {fact.name for fact in gone}
    rules = [r for r in engine.book.alert_rules if any(c.fact in names for c in r.unless)]
    found: list[tuple[Alert, set[str]]] = []
    if not rules:
        return found
    for alert in engine.all_held():
        blocked = {
            rule.name
            for rule in rules
            if all(m.matches(alert.labels) for m in rule.matchers)
            and any(fact_meets(f, c, alert) for c in rule.unless for f in gone)
        }
        if blocked:
            found.append((alert, blocked))
    return found


async def unblock(store: Store, work: Work, pipeline: Pipeline, gone: list[Fact]) -> None:
    """Decide, in `work`'s transaction, the rules that facts now gone (expired, retracted)
    kept from acting on held alerts, where they hold now and were not decided since."""
    shown = ", ".join(sorted({f.shown() for f in gone}))
    for alert, rules in unblocked(pipeline.engine, gone):
        last = await store.decisions.last_verdicts(work.conn, alert.incident)
        matches = [
            m
            for m in pipeline.engine.holding(alert)
            if m.rule.name in rules and asked_again(last.get(m.rule.name))
        ]
        if matches:
            work.because(f"re-examined: {shown} went away")
            try:
                await pipeline.again(work, matches)
            finally:
                work.because(None)


async def _still_blocked(store: Store, work: Work, row: DueIncident, now: float) -> bool:
    """Whether the name an incident waits for is blocked still, and then wait on: taken
    again (by an incident before it), or a key freed with its cooldown started (as a run's
    end starts it) — asking the guard would only record the refusal it must give."""
    assert row.block is not None
    holder = await store.leases.holder(work.conn, [row.block])
    if holder is not None:
        await store.incidents.held_by(work.conn, row.incident, holder.decision_id)
        return True
    kind, _, key = row.block.partition(":")
    until = await store.leases.cooldown_until(work.conn, key, now) if kind == "key" else None
    if until is not None:
        await store.incidents.cools_until(work.conn, row.incident, until)
        return True
    return False
