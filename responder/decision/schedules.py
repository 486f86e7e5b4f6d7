"""Schedules: a rule's cron expression, read in its explicit time zone, and its ticks.

Cron is read by `cronsim` (Prefect's own cron library, already installed with it): five
fields, or six with seconds first. Each tick becomes a CloudEvent in the inbox, the one entry
of everything Responder decides on (`runtime.convergence` writes it when the rule's durable
timer comes due), so a tick is stored, and deduplicated by its identity: the rule and the
tick's time. After downtime, the ticks missed are caught up once: the latest of them fires,
and the next timer is the first tick after now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from responder.events.cloudevents import CloudEvent
from responder.exceptions import RuleError

SCHEDULE_SOURCE = "responder/schedule"
SCHEDULE_TYPE = "responder.schedule.tick"


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; a `RuleError` naming what is accepted otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(
            f"timezone {name!r} is not an IANA time zone name (e.g. UTC, Europe/Paris)"
        ) from None


def check_cron(expression: str) -> str:
    """`expression`, if cron reads it; a `RuleError` saying what is accepted otherwise."""
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError, KeyError) as exc:
        raise RuleError(
            f"cron {expression!r}: {exc}; accepted: five fields (minute hour day month "
            'weekday, e.g. "0 2 * * *") or six with seconds first'
        ) from None
    return expression


def next_tick(cron: str, timezone: str, after: float) -> float:
    """The first tick strictly after `after` (a UNIX time), as a UNIX time."""
    start = datetime.fromtimestamp(after, zone(timezone))
    return next(iter(CronSim(cron, start))).timestamp()


def latest_tick(cron: str, timezone: str, at_most: float) -> float:
    """The last tick at or before `at_most`."""
    start = datetime.fromtimestamp(at_most, zone(timezone))
    if next_tick(cron, timezone, at_most - 1e-3) <= at_most:
        return next_tick(cron, timezone, at_most - 1e-3)
    return next(iter(CronSim(cron, start, reverse=True))).timestamp()


def tick_event(rule: str, tick: float) -> CloudEvent:
    """The event one tick of `rule` is: its identity is the rule and the tick's time."""
    at = datetime.fromtimestamp(tick, UTC)
    return CloudEvent(
        specversion="1.0",
        id=f"{rule}@{at.isoformat()}",
        source=SCHEDULE_SOURCE,
        type=SCHEDULE_TYPE,
        subject=rule,
        time=at,
        data={"rule": rule, "tick": at.isoformat()},
    )
