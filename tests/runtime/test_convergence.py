"""Level-triggered convergence: a refused incident is decided again once its block clears.

Each test drives an engine loop on a real store (SQLite and PostgreSQL) with a clock of its
own, and ends with exactly one admitted decision per incident.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from responder.authoring.sandbox import Clock, fingerprint_of
from responder.control import leases, pause
from responder.control.guard import Guard
from responder.control.runs import active_runs
from responder.decision.rules import RuleBook, load_rules
from responder.decision.services import ServiceCatalog
from responder.runtime.loop import EngineLoop
from responder.storage.inbox import InboxSource
from responder.storage.store import Store

RESTART = """
  - name: restart
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard:
      key: "restart/{{ alert.labels.instance }}"
      mutex: ["host:{{ alert.labels.instance }}"]
      cooldown: 10m
"""
# Another rule, for another alert on the same host: the host's mutex keeps them apart.
CLEAN = """
  - name: clean-disk
    match: ['alertname="DiskFull"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/clean"}}
    guard: {key: "clean/{{ alert.labels.instance }}", mutex: ["host:{{ alert.labels.instance }}"]}
"""
# Two rules for one alert sharing one key: at most one of them may run.
TWINS = """
  - name: clean-disk-twin
    match: ['alertname="DiskFull"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/clean-twin"}}
    guard:
      key: "clean/{{ alert.labels.instance }}"
      key_scope: shared
      mutex: ["host:{{ alert.labels.instance }}"]
"""


class Responder:
    """An engine loop over the test's store, a clock that moves when told, no dispatch."""

    def __init__(self, store: Store, tmp_path: Path, rules: str) -> None:
        self.store = store
        self.clock = Clock()
        self._tmp = tmp_path
        self.book = self.rules(rules)
        self.loop = self.restart()
        self._started: dict[str, float] = {}

    def rules(self, text: str) -> RuleBook:
        path = self._tmp / f"rules-{len(text)}.yaml"
        path.write_text("rules:" + text)
        return load_rules([path])

    def restart(self) -> EngineLoop:
        """A new engine loop on the same store (a new leader)."""
        guard = Guard(self.store, lease_seconds=3600.0, clock=self.clock)
        self.loop = EngineLoop(
            self.store,
            guard,
            None,
            self.book,
            ServiceCatalog(),
            clock=self.clock,
            recheck_seconds=0.0,
        )
        return self.loop

    async def start(self) -> Responder:
        await self.loop.rebuild()
        return self

    async def new_leader(self) -> None:
        """The leader stops; a new one starts on the same store."""
        self.restart()
        await self.start()

    def alert(self, name: str, instance: str, status: str = "firing") -> dict[str, Any]:
        labels = {"alertname": name, "instance": instance}
        fingerprint = fingerprint_of(labels)
        started = self._started.setdefault(fingerprint, self.clock.now)
        return {
            "status": status,
            "labels": labels,
            "annotations": {},
            "startsAt": datetime.fromtimestamp(started, UTC).isoformat(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }

    async def send(self, *alerts: dict[str, Any]) -> None:
        body = {
            "version": "4",
            "groupKey": "{}",
            "status": "firing",
            "receiver": "r",
            "alerts": [*alerts],
        }
        await self.store.inbox.add(InboxSource.ALERTMANAGER, json.dumps(body).encode())
        await self.settle()

    async def settle(self) -> None:
        while await self.loop.step():
            pass

    async def finish(self, rule: str, state: str = "COMPLETED", *, settle: bool = True) -> None:
        [run] = [r for r in await active_runs(self.store) if r.rule == rule]
        assert await leases.finish(self.store, run.decision_id, state, now=self.clock.now)
        if settle:
            await self.settle()

    async def decisions(self, name: str) -> list[dict[str, Any]]:
        rows = reversed(await self.store.decisions.recent(limit=10_000))
        return [r for r in rows if r["alertname"] == name and r["rule"] is not None]

    async def admitted(self, name: str) -> list[dict[str, Any]]:
        return [r for r in await self.decisions(name) if r["verdict"] == "admitted"]


async def responder(store: Store, tmp_path: Path, rules: str) -> Responder:
    return await Responder(store, tmp_path, rules).start()


async def test_a_run_that_ends_admits_the_incident_waiting_for_its_mutex(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART + CLEAN)
    await r.send(r.alert("Down", "h1"))
    await r.send(r.alert("DiskFull", "h1"))
    [refused] = await r.decisions("DiskFull")
    assert (refused["verdict"], refused["refusal"]) == ("refused", "mutex_held")
    assert (await store.incidents.counts())["waiting"] == 1
    [waiting] = await store.incidents.waiting()
    assert (waiting["waiting_on"], waiting["block"]) == ("mutex_held", "mutex:host:h1")
    await r.settle()  # the mutex is still held: nothing is decided again
    assert len(await r.decisions("DiskFull")) == 1

    await r.finish("restart")

    [run] = await r.admitted("DiskFull")
    [down] = await r.admitted("Down")
    assert run["reason"].startswith(
        f"re-examined: mutex host:h1 released by decision {down['id']}; "
    )
    counts = await store.incidents.counts()
    assert (counts["waiting"], counts["running"], counts["done"]) == (0, 1, 1)


async def test_a_cooldown_that_ends_admits_the_incident_still_firing(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    await r.send(r.alert("Down", "h1"))
    await r.finish("restart")
    await r.send(r.alert("Down", "h1", "resolved"))
    r._started.clear()
    r.clock.now += 60  # a new incident on the same host, inside the cooldown
    await r.send(r.alert("Down", "h1"))
    assert [d["refusal"] for d in await r.decisions("Down")] == [None, "cooldown"]

    r.clock.now += 300
    await r.settle()
    assert len(await r.admitted("Down")) == 1  # still cooling down

    r.clock.now += 300
    await r.settle()
    admitted = await r.admitted("Down")
    assert len(admitted) == 2
    assert admitted[1]["reason"].startswith("re-examined: the cooldown ended; ")
    assert admitted[0]["incident"] != admitted[1]["incident"]  # one per incident


async def test_an_incident_that_resolved_while_cooling_down_is_not_decided_again(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    await r.send(r.alert("Down", "h1"))
    await r.finish("restart")
    await r.send(r.alert("Down", "h1", "resolved"))
    r._started.clear()
    r.clock.now += 60
    await r.send(r.alert("Down", "h1"))
    await r.send(r.alert("Down", "h1", "resolved"))

    r.clock.now += 3600
    await r.settle()

    assert len(await r.admitted("Down")) == 1
    assert (await store.incidents.counts())["resolved"] == 2


async def test_resuming_admits_the_incident_refused_while_paused(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    await pause.pause(store, "maintenance", "ops")
    await r.send(r.alert("Down", "h1"))
    await r.settle()
    assert [d["refusal"] for d in await r.decisions("Down")] == ["paused"]

    await pause.resume(store)
    await r.settle()

    [run] = await r.admitted("Down")
    assert run["reason"].startswith("re-examined: remediation resumed; ")


async def test_a_rule_added_while_an_alert_fires_acts_on_it_after_the_reload(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, CLEAN)
    await r.send(r.alert("Down", "h1"))
    assert (await store.incidents.counts())["unmatched"] == 1
    await r.settle()
    assert await r.admitted("Down") == []

    await r.loop.use(r.rules(CLEAN + RESTART), ServiceCatalog())
    await r.settle()

    [run] = await r.admitted("Down")
    assert run["reason"].startswith("re-examined: the rules changed; ")
    await r.settle()
    assert len(await r.decisions("Down")) == 1


async def test_a_block_that_cleared_while_no_leader_ran_is_decided_again_after_restart(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART + CLEAN)
    await r.send(r.alert("Down", "h2"))
    await r.send(r.alert("DiskFull", "h2"))  # waits for h2's host mutex
    assert [d["refusal"] for d in await r.decisions("DiskFull")] == ["mutex_held"]

    # The leader stops; meanwhile the run holding h2's mutex ends.
    await r.finish("restart", settle=False)
    await r.new_leader()
    await r.settle()

    [run] = await r.admitted("DiskFull")
    assert run["reason"].startswith("re-examined: mutex host:h2 released by decision ")


async def test_two_blocks_clearing_at_once_admit_the_incident_once(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART + CLEAN + TWINS)
    await r.send(r.alert("Down", "h1"))
    await pause.pause(store, "maintenance", "ops")
    await r.send(r.alert("DiskFull", "h1"))  # both rules refused: paused
    assert [d["refusal"] for d in await r.decisions("DiskFull")] == ["paused", "paused"]

    # The pause is lifted and the host's mutex freed at once; both rules hold again.
    await pause.resume(store)
    await r.finish("restart")
    for _ in range(3):
        await r.settle()

    assert len(await r.admitted("DiskFull")) == 1
    refusals = [d["refusal"] for d in await r.decisions("DiskFull")]
    assert refusals == ["paused", "paused", None, "mutex_held"]


async def test_max_attempts_stays_refused(store: Store, tmp_path: Path) -> None:
    rules = """
  - name: restart
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/x"}}
    guard: {key: "restart/{{ alert.labels.instance }}", max_attempts: 2}
"""
    r = await responder(store, tmp_path, rules)
    await r.send(r.alert("Down", "h1"))
    for _ in range(2):  # the ladder tries again while the alert fires, up to max_attempts
        await r.finish("restart")
        r.clock.now += 2
        await r.settle()
    r.clock.now += 3600
    for _ in range(3):
        await r.settle()
    verdicts = [(d["verdict"], d["refusal"]) for d in await r.decisions("Down")]
    assert verdicts == [("admitted", None), ("admitted", None), ("refused", "max_attempts")]
    assert (await store.incidents.counts())["exhausted"] == 1


async def test_a_freed_mutex_with_many_waiting_costs_one_admission_and_no_refusals(
    store: Store, tmp_path: Path
) -> None:
    shared = RESTART.replace("host:{{ alert.labels.instance }}", "the-one-mutex")
    r = await responder(store, tmp_path, shared)
    await r.send(r.alert("Down", "h0"))
    await r.send(*(r.alert("Down", f"h{i}") for i in range(1, 21)))
    assert len(await r.decisions("Down")) == 21
    await r.finish("restart")
    for _ in range(3):
        await r.settle()
    rows = await r.decisions("Down")
    assert [d["verdict"] for d in rows[21:]] == ["admitted"]  # h1, the longest waiting
    assert rows[21]["labels"]["instance"] == "h1"
    [h2] = [w for w in await store.incidents.waiting() if w["incident"] == rows[2]["incident"]]
    assert h2["holder"] == rows[21]["id"]  # waiting for the new holder
    assert (await store.incidents.counts())["waiting"] == 19


async def test_a_run_that_ends_admits_the_incident_refused_for_the_blast_radius(
    store: Store, tmp_path: Path
) -> None:
    rules = """
  - name: restart
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}", max_active: 1}
"""
    r = await responder(store, tmp_path, rules)
    await r.send(r.alert("Down", "h1"), r.alert("Down", "h2"))
    assert [d["refusal"] for d in await r.decisions("Down")] == [None, "max_active"]
    await r.settle()
    assert len(await r.decisions("Down")) == 2
    await r.finish("restart")
    [_, second] = await r.admitted("Down")
    assert second["labels"]["instance"] == "h2"
    assert second["reason"].startswith("re-examined: a run ended (max_active); ")


async def test_a_budget_window_that_moves_on_admits_the_incident(
    store: Store, tmp_path: Path
) -> None:
    rules = """
  - name: restart
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}", budget: {max_starts: 1, per: 10m}}
"""
    r = await responder(store, tmp_path, rules)
    await r.send(r.alert("Down", "h1"))
    r.clock.now += 60
    await r.send(r.alert("Down", "h2"))
    assert [d["refusal"] for d in await r.decisions("Down")] == [None, "budget"]
    [waiting] = await store.incidents.waiting()
    assert waiting["until"] == r.clock.now - 60 + 600
    r.clock.now += 539
    await r.settle()
    assert len(await r.admitted("Down")) == 1
    r.clock.now += 2
    await r.settle()
    [_, second] = await r.admitted("Down")
    assert second["reason"].startswith("re-examined: the budget window moved on; ")


async def test_a_reload_asks_again_even_if_the_leader_stops_before_its_next_tick(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, CLEAN)
    await r.send(r.alert("Down", "h1"))
    r.book = r.rules(CLEAN + RESTART)
    await r.loop.use(r.book, ServiceCatalog())  # marks the unmatched incident due ...
    await r.new_leader()  # ... and the leader stops before deciding it; the next one has the rules
    await r.settle()
    [run] = await r.admitted("Down")
    assert run["reason"].startswith("re-examined: the rules changed; ")


GUARDED = """
  - name: restart
    match: ['alertname="Down"']
    unless:
      - fact: event
        where: ['type="maintenance.started"', 'instance="{{ alert.labels.instance }}"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}"}
"""
# Maintenance ends by rule: a maintenance.finished event retracts the started one.
ENDS = """
  - name: maintenance-over
    match: ['alertname="MaintenanceOver"']
    retract:
      - fact: event
        where: ['type="maintenance.started"', 'instance="{{ alert.labels.instance }}"']
"""


async def maintenance(r: Responder, instance: str) -> None:
    event = {
        "specversion": "1.0",
        "id": f"m-{instance}",
        "source": "ops",
        "type": "maintenance.started",
        "data": {"instance": instance},
    }
    await r.store.inbox.add(InboxSource.CLOUDEVENTS, json.dumps(event).encode())
    await r.settle()


async def test_a_maintenance_that_expires_lets_the_rule_act_on_the_alert_still_firing(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, GUARDED)
    await maintenance(r, "h1")
    await r.send(r.alert("Down", "h1"), r.alert("Down", "h2"))
    assert [d["labels"]["instance"] for d in await r.admitted("Down")] == ["h2"]

    r.clock.now += 3601  # the event fact's TTL (the loop's event_ttl) is over
    await r.settle()

    [_, h1] = await r.admitted("Down")
    assert h1["labels"]["instance"] == "h1"
    assert h1["reason"].startswith(
        "re-examined: event{id=m-h1,instance=h1,source=ops,subject=,type=maintenance.started} "
        "went away; "
    )
    r.clock.now += 3600
    await r.settle()
    assert len(await r.admitted("Down")) == 2  # h2 ran already: not asked again


async def test_a_maintenance_a_rule_retracts_lets_the_rule_act_at_once(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, GUARDED + ENDS)
    await maintenance(r, "h1")
    await r.send(r.alert("Down", "h1"))
    assert await r.admitted("Down") == []
    await r.send(r.alert("MaintenanceOver", "h1"))
    [run] = await r.admitted("Down")
    assert run["reason"].startswith("re-examined: event{")


async def test_a_resolved_incidents_record_is_forgotten_after_a_week(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    await r.send(r.alert("Down", "h1"))
    await r.finish("restart")
    await r.send(r.alert("Down", "h1", "resolved"))
    r.clock.now += 6 * 86400
    await r.new_leader()
    await r.settle()
    assert (await store.incidents.counts())["resolved"] == 1
    r.clock.now += 2 * 86400
    await r.new_leader()
    await r.settle()
    assert (await store.incidents.counts())["resolved"] == 0
    assert len(await r.admitted("Down")) == 1  # the decision log keeps it


def window(name: str, start: float, end: float, **fields: Any) -> dict[str, Any]:
    """A maintenance window's spec, as the API keeps it."""
    return {
        "name": name,
        "reason": f"{name} work",
        "start": datetime.fromtimestamp(start, UTC).isoformat(),
        "end": datetime.fromtimestamp(end, UTC).isoformat(),
        **fields,
    }


async def test_a_maintenance_window_refuses_and_its_end_decides_the_incident_again(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    now = r.clock.now
    spec = window("kernel", now - 60, now + 3600, hosts=["H1"])
    assert await store.maintenance.add("kernel", spec, "alice", now) is None
    await r.send(r.alert("Down", "h1:9100"), r.alert("Down", "h2"))

    decisions = await r.decisions("Down")
    [refused] = [d for d in decisions if d["labels"]["instance"] == "h1:9100"]
    assert (refused["verdict"], refused["refusal"]) == ("refused", "maintenance")
    assert (
        refused["reason"] == "maintenance window 'kernel' until 2026-01-01T01:00:00Z: kernel work"
    )
    [waiting] = await store.incidents.waiting()
    assert (waiting["waiting_on"], waiting["block"]) == ("maintenance", "maintenance:kernel")
    assert waiting["until"] == now + 3600
    assert len(await r.admitted("Down")) == 1  # h2's

    # The leader stops while the window is in effect; a new one finds the wait in the store.
    r.clock.now = now + 1800
    await r.new_leader()
    await r.settle()
    assert len(await r.admitted("Down")) == 1

    r.clock.now = now + 3601
    await r.settle()
    admitted = [d for d in await r.admitted("Down") if d["labels"]["instance"] == "h1:9100"]
    assert len(admitted) == 1
    assert admitted[0]["reason"].startswith("re-examined: maintenance window kernel ended; ")


async def test_a_rule_that_ignores_maintenance_acts_in_a_window(
    store: Store, tmp_path: Path
) -> None:
    pager = """
  - name: page
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/page"}}
    guard: {key: "page/{{ alert.labels.instance }}", maintenance: ignore}
"""
    r = await responder(store, tmp_path, RESTART + pager)
    now = r.clock.now
    spec = window("all", now - 60, now + 3600, match=['alertname=~".+"'])
    await store.maintenance.add("all", spec, "alice", now)
    await r.send(r.alert("Down", "h1"))
    verdicts = {d["rule"]: d["refusal"] or d["verdict"] for d in await r.decisions("Down")}
    assert verdicts == {"restart": "maintenance", "page": "admitted"}


async def test_a_recurring_window_refuses_in_each_occurrence_only(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    now = r.clock.now  # 2026-01-01T00:00Z, a Thursday
    # Every Thursday 00:30 to 01:30 in Paris (UTC+1 in winter): 23:30 to 00:30 UTC.
    spec = {
        "name": "thursdays",
        "reason": "weekly patching",
        "start": "2025-12-04T00:30:00",
        "end": "2025-12-04T01:30:00",
        "timezone": "Europe/Paris",
        "recurrence": "FREQ=WEEKLY;BYDAY=TH",
        "match": ['instance="h1"'],
    }
    await store.maintenance.add("thursdays", spec, "alice", now)
    await r.send(r.alert("Down", "h1"))
    [refused] = await r.decisions("Down")
    assert refused["reason"].startswith("maintenance window 'thursdays' until 2026-01-01T00:30:00Z")

    r.clock.now = now + 1801  # the occurrence ended
    await r.settle()
    assert len(await r.admitted("Down")) == 1
    await r.finish("restart")
    await r.send(r.alert("Down", "h1", "resolved"))
    r._started.clear()

    r.clock.now = now + 7 * 86400 - 600  # the next Thursday, 23:50 UTC: in effect again
    await r.send(r.alert("Down", "h1"))
    assert [d["refusal"] for d in await r.decisions("Down")][-1] == "maintenance"


async def test_removing_a_window_decides_the_incidents_it_refused_at_once(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, RESTART)
    now = r.clock.now
    await store.maintenance.add(
        "kernel", window("kernel", now, now + 86400, hosts=["h1"]), "a", now
    )
    await r.send(r.alert("Down", "h1"))
    assert [d["refusal"] for d in await r.decisions("Down")] == ["maintenance"]

    assert await store.maintenance.remove("kernel")
    async with store.transaction() as conn:
        await store.incidents.ask_again_waiting_on(conn, "maintenance")
    await r.settle()

    [run] = await r.admitted("Down")
    assert run["reason"].startswith("re-examined: the maintenance windows changed; ")
