"""Event timers: an absence noticed, a schedule's tick. Each becomes an event in the inbox
when its durable timer comes due (`runtime.convergence.fire` hands them here), so that what
decides on it is the one entry every event goes through (`decision.event_rules`), stored and
deduplicated by its identity.

- `absence` (an event rule's `not_followed_by`): unless the follower came meanwhile (it
  deletes the timer; one held as an `event` fact, out of order or while no leader ran, counts
  too), an absence event naming the rule and carrying the first event.
- `schedule`: the tick event of the latest tick due (after downtime, the ticks missed are
  caught up once, not one by one), and the timer moved to the first tick after now.
"""

from __future__ import annotations

import logging
from typing import Any

from responder.decision.event_rules import HeldFacts, absence_event
from responder.decision.pipeline import Pipeline
from responder.decision.rules import RuleBook
from responder.decision.schedules import latest_tick, next_tick, tick_event
from responder.events.cloudevents import CloudEvent
from responder.runtime.work import Work
from responder.storage.inbox import InboxSource
from responder.storage.store import Store
from responder.storage.timers import ABSENCE, SCHEDULE, Timer, schedule_row

log = logging.getLogger(__name__)

EVENT_TIMERS = frozenset({ABSENCE, SCHEDULE})


async def fire(store: Store, work: Work, pipeline: Pipeline, timer: Timer, now: float) -> None:
    """Put the event a due event timer stands for in the inbox (in `work`'s transaction)."""
    rule = next((r for r in pipeline.book.rules if r.name == timer.rule), None)
    event: CloudEvent | None = None
    if timer.kind == ABSENCE and rule is not None and rule.not_followed_by is not None:
        first = CloudEvent.model_validate_json(timer.payload or "{}")
        if pipeline.events.follower_held(rule, first, HeldFacts(pipeline.engine.facts)):
            log.info("absence %s: the follower of %s came", rule.name, first.id)
            return
        event = absence_event(rule.name, first, now)
    elif timer.kind == SCHEDULE and rule is not None and rule.schedule is not None:
        spec = rule.schedule
        tick = max(timer.due_at, latest_tick(spec.cron, spec.timezone, now))
        event = tick_event(rule.name, tick)
        work.schedule(rule.name, next_tick(spec.cron, spec.timezone, max(now, tick)))
    if event is None:
        return  # the rule is gone or changed: the timer goes with it
    await store.inbox.add_in(
        work.conn, InboxSource.CLOUDEVENTS, event.model_dump_json(exclude_none=True).encode(), now
    )


def schedule_rows(book: RuleBook, now: float) -> list[dict[str, Any]]:
    """The first tick of every schedule rule (set only where no timer is set yet)."""
    return [
        schedule_row(rule.name, next_tick(rule.schedule.cron, rule.schedule.timezone, now), now)
        for rule in book.rules
        if rule.schedule is not None
    ]
