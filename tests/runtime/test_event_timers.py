"""Absence and schedules: durable timers that become events in the inbox, through the real
engine loop on a real store (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from responder.control.guard import Guard
from responder.decision.services import ServiceCatalog
from responder.runtime.loop import EngineLoop
from responder.storage.store import Store
from tests.decision.test_event_rules import Events, events

NEVER_FINISHED = """
  - name: deploy-never-finished
    event: ['type="deploy.started"']
    not_followed_by: {match: ['type="deploy.finished"'], within: 30m, same: [subject]}
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/page/{{ event.subject }}"}}
    guard: {key: "page/{{ event.subject }}"}
"""


def at(r: Events, seconds: float = 0.0) -> str:
    return datetime.fromtimestamp(r.clock.now + seconds, UTC).isoformat()


def started(r: Events, id: str, subject: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"id": id, "type": "deploy.started", "subject": subject, "time": at(r, seconds)}


def finished(r: Events, id: str, subject: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"id": id, "type": "deploy.finished", "subject": subject, "time": at(r, seconds)}


async def later(r: Events, seconds: float) -> None:
    r.clock.now += seconds
    await r.settle()


async def test_absence_fires_after_within_and_not_when_the_follower_came(
    store: Store, tmp_path: Path
) -> None:
    r = await events(store, tmp_path, NEVER_FINISHED)
    await r.event(started(r, "s1", "api"), started(r, "s2", "web"))
    assert [d["verdict"] for d in await r.ledger("deploy-never-finished")] == [
        "deferred",
        "deferred",
    ]
    await later(r, 10 * 60)
    assert await store.timers.count() == 2
    await r.event(finished(r, "f1", "web"))  # web finished in time; api never does
    assert await store.timers.count() == 1  # the follower ended web's timer
    await later(r, 19 * 60)
    assert [d["verdict"] for d in await r.ledger("deploy-never-finished")][2:] == []
    await later(r, 2 * 60)  # past 30m
    [admitted] = (await r.ledger("deploy-never-finished"))[2:]
    assert admitted["verdict"] == "admitted"
    assert admitted["labels"]["subject"] == "api"  # the decision is about the first event
    [run] = [d for d in await store.decisions.recent(limit=50) if d["verdict"] == "admitted"]
    assert run["parameters"]["url"] == "http://127.0.0.1:9/page/api"
    await later(r, 3600)  # once: the timer was taken
    assert len(await r.ledger("deploy-never-finished")) == 3
    assert await store.timers.count() == 0


async def test_a_follower_that_came_first_out_of_order_counts(store: Store, tmp_path: Path) -> None:
    r = await events(store, tmp_path, NEVER_FINISHED)
    # The finish arrives before the start that it follows (their times say so).
    await r.event(finished(r, "f1", "api", seconds=60))
    await r.event(started(r, "s1", "api"))
    # An old finish (before this start) is no follower of it.
    await r.event(finished(r, "f0", "db", seconds=-600))
    await r.event(started(r, "s0", "db"))
    await later(r, 31 * 60)
    verdicts = [
        (d["labels"]["subject"], d["verdict"]) for d in await r.ledger("deploy-never-finished")
    ]
    assert verdicts == [("db", "deferred"), ("db", "admitted")]


async def test_absence_survives_a_new_leader(store: Store, tmp_path: Path) -> None:
    r = await events(store, tmp_path, NEVER_FINISHED)
    await r.event(started(r, "s1", "api"), started(r, "s2", "web"))
    await r.new_leader()
    await later(r, 5 * 60)
    await r.event(finished(r, "f2", "web"))
    await r.new_leader()  # the follower's end of the timer is durable too
    r.clock.now += 40 * 60
    await r.new_leader()  # due while no leader ran: the next leader fires it
    await r.settle()
    decided = [
        (d["labels"]["subject"], d["verdict"]) for d in await r.ledger("deploy-never-finished")
    ]
    assert decided[2:] == [("api", "admitted")]


NIGHTLY = """
  - name: nightly
    schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/renew?at={{ event.time }}"}}
    guard: {key: nightly}
"""


async def test_a_schedule_ticks_and_catches_up_once_after_downtime(
    store: Store, tmp_path: Path
) -> None:
    r = Events(store, tmp_path, NIGHTLY)
    r.clock.now = datetime(2026, 1, 10, 0, 30, tzinfo=UTC).timestamp()  # 01:30 in Paris
    await r.start()
    await later(r, 20 * 60)
    assert await r.ledger("nightly") == []
    await later(r, 10 * 60)  # 02:00 Paris
    [first] = await r.ledger("nightly")
    assert first["verdict"] == "admitted"
    assert first["labels"]["id"] == "nightly@2026-01-10T01:00:00+00:00"
    await r.finish("nightly")
    # Down for three nights: the next leader runs it once, not three times.
    r.clock.now += 3 * 86400 + 3600
    await r.new_leader()
    await r.settle()
    ticks = [d["labels"]["id"] for d in await r.ledger("nightly")]
    assert ticks == [
        "nightly@2026-01-10T01:00:00+00:00",
        "nightly@2026-01-13T01:00:00+00:00",
    ]
    await r.finish("nightly")
    await r.settle()
    assert len(await r.ledger("nightly")) == 2
    await later(r, 86400)  # the next night, on time
    assert len(await r.ledger("nightly")) == 3


async def test_a_tick_written_twice_is_decided_once(store: Store, tmp_path: Path) -> None:
    r = Events(store, tmp_path, NIGHTLY)
    r.clock.now = datetime(2026, 1, 10, 1, 0, 1, tzinfo=UTC).timestamp()
    await r.start()
    tick = {
        "source": "responder/schedule",
        "type": "responder.schedule.tick",
        "id": "nightly@2026-01-10T01:00:00+00:00",
        "subject": "nightly",
    }
    await r.event(tick, tick)
    assert [d["verdict"] for d in await r.ledger()] == ["admitted", "duplicate"]


EVERY_SECOND = """
  - name: every-second
    schedule: {cron: "* * * * * *", timezone: UTC}
    assert: {fact: ticked, with: {at: "{{ event.time }}"}, ttl: 1h}
"""


async def test_a_schedule_on_the_real_clock(store: Store, tmp_path: Path) -> None:
    r = Events(store, tmp_path, EVERY_SECOND)
    guard = Guard(store, lease_seconds=3600.0)
    r.loop = EngineLoop(
        store, guard, None, r.book, ServiceCatalog(), recheck_seconds=0.0, idle_seconds=0.05
    )
    await r.loop.rebuild()
    task = asyncio.create_task(r.loop.run())
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            ticked = [f for f in r.loop.engine.facts() if f.name == "ticked"]
            if len(ticked) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    times = sorted(float(datetime.fromisoformat(f.fields["at"]).timestamp()) for f in ticked)
    assert len(times) >= 2 and times[1] - times[0] == 1.0
