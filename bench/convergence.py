"""Benchmark of convergence: from a block clearing to the waiting incidents' admission, and
the cost of a periodic resync with Alertmanager.

`clearing`: N incidents wait, each on its own key, then their block clears at once. Two
blocks: the pause lifted (`resume`), and N runs ending, each freeing the host mutex one
waiting incident needs (`released`). The real engine loop runs on a real store with the
production tick (`RECHECK_SECONDS`); each incident's latency is from the moment its block
cleared (the commit that cleared it) to its admitted decision's record.

`resync`: a real Alertmanager (Debian's prometheus-alertmanager) holds N firing alerts;
one resync reads them and compares them with what Responder holds. Measured in the steady
state (Responder holds every one: nothing to commit) and after a total loss (Responder holds
none: all N go to the inbox).

    python bench/convergence.py --incidents 1000 --alerts 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.decision_path import _reset
from responder.control import leases, pause
from responder.control.guard import Guard
from responder.control.runs import active_runs
from responder.decision.rules import RuleBook, load_rule_text
from responder.decision.services import ServiceCatalog
from responder.orchestration.alertmanager import Alertmanager
from responder.runtime.loop import EngineLoop
from responder.runtime.resync import resync
from responder.storage.inbox import InboxSource
from responder.storage.store import Store

RULES = """
rules:
  - name: restart
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}", mutex: ["host:{{ alert.labels.instance }}"]}
  - name: clean
    match: ['alertname="DiskFull"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/clean"}}
    guard: {key: "clean/{{ alert.labels.instance }}", mutex: ["host:{{ alert.labels.instance }}"]}
"""
NEVER = "0001-01-01T00:00:00Z"


def book() -> RuleBook:
    rules, sources = load_rule_text(RULES, "bench.yaml")
    return RuleBook(tuple(rules), tuple(sources))


def alert(name: str, instance: str, started: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": name, "instance": instance},
        "annotations": {},
        "startsAt": started,
        "endsAt": NEVER,
        "fingerprint": f"{abs(hash((name, instance))):016x}"[:16],
    }


async def send(store: Store, alerts: list[dict[str, Any]]) -> None:
    for start in range(0, len(alerts), 100):
        body = {"version": "4", "status": "firing", "receiver": "r", "groupKey": "{}"}
        body["alerts"] = alerts[start : start + 100]
        await store.inbox.add(InboxSource.ALERTMANAGER, json.dumps(body).encode())


async def admitted_at(store: Store, alertname: str) -> dict[str, float]:
    """Each admitted incident of `alertname`, with when its decision was recorded."""
    rows = await store.decisions.recent(limit=100_000)
    return {
        r["incident"]: r["created_at"]
        for r in rows
        if r["alertname"] == alertname and r["verdict"] == "admitted"
    }


async def clearing(url: str, incidents: int, block: str) -> dict[str, Any]:
    """N incidents wait on `block` (resume | released), which clears; latencies in ms."""
    await _reset(url)
    store = Store(url)
    await store.migrate()
    loop = EngineLoop(store, Guard(store, 3600.0), None, book(), ServiceCatalog())
    await loop.rebuild()
    started = datetime.now(UTC).isoformat()
    hosts = [f"h{i}" for i in range(incidents)]
    waiting = "Down"
    if block == "resume":
        await pause.pause(store, "bench", "bench")
    else:  # each host's mutex is held by a running restart; disk clean-ups wait for it
        await send(store, [alert("Down", h, started) for h in hosts])
        waiting = "DiskFull"
    await send(store, [alert(waiting, h, started) for h in hosts])
    while await loop.step():
        pass
    assert (await store.incidents.counts())["waiting"] == incidents
    task = asyncio.create_task(loop.run())
    cleared: dict[str, float] = {}
    if block == "resume":
        await pause.resume(store)  # as `Service.resume` does on the leader
        loop.recheck_now()
        at = time.time()
        cleared = {h: at for h in hosts}
    else:
        for run in await active_runs(store):
            await leases.finish(store, run.decision_id, "COMPLETED")
            cleared[run.labels["instance"]] = time.time()
    deadline = time.monotonic() + 600
    while len(done := await admitted_at(store, waiting)) < incidents:
        assert time.monotonic() < deadline, f"{len(done)} of {incidents} admitted"
        await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    rows = await store.decisions.recent(limit=100_000)
    instance = {r["incident"]: r["labels"]["instance"] for r in rows}
    waits = sorted((done[i] - cleared[instance[i]]) * 1000 for i in done)
    await store.close()
    return {
        "block": block,
        "incidents": incidents,
        "p50_ms": round(statistics.median(waits)),
        "p99_ms": round(waits[int(len(waits) * 0.99) - 1]),
        "max_ms": round(waits[-1]),
    }


async def push(alertmanager: str, count: int) -> None:
    """N firing alerts into Alertmanager, firing for a day (without `endsAt` Alertmanager
    resolves them after its `resolve_timeout`, five minutes). No rule matches them: what is
    measured is the resync, not the decisions it leads to."""
    now = datetime.now(UTC)
    started, ends = now.isoformat(), (now + timedelta(days=1)).isoformat()
    async with httpx.AsyncClient(timeout=30) as http:
        for start in range(0, count, 1000):
            batch = [
                {
                    "labels": {"alertname": "Unruled", "instance": f"h{i}"},
                    "startsAt": started,
                    "endsAt": ends,
                }
                for i in range(start, min(start + 1000, count))
            ]
            (await http.post(f"{alertmanager}/api/v2/alerts", json=batch)).raise_for_status()


async def resync_cost(url: str, alertmanager: str, alerts: int) -> list[dict[str, Any]]:
    """One resync against N firing alerts: steady (all held) and after a total loss."""
    results = []
    for state in ("lost", "steady"):
        if state == "lost":
            await _reset(url)
        store = Store(url)
        await store.migrate()
        if state == "steady":  # what the lost resync committed is now held
            loop = EngineLoop(store, Guard(store, 3600.0), None, book(), ServiceCatalog())
            await loop.rebuild()
            while await loop.step():
                pass
        am = Alertmanager(alertmanager)
        wall, cpu = time.perf_counter(), time.process_time()
        firing, resolved = await resync(am, "", store)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await am.close()
        await store.close()
        held = 0 if state == "lost" else alerts
        assert firing + resolved == alerts - held, f"{state}: {firing} + {resolved} committed"
        results.append(
            {
                "resync": state,
                "alerts": alerts,
                "held": held,
                "committed": firing + resolved,
                "seconds": round(wall, 3),
                "cpu_seconds": round(cpu, 3),
            }
        )
    return results


ALERTMANAGER_CONFIG = """
route: {receiver: responder, group_wait: 1h, group_interval: 1h, repeat_interval: 24h}
receivers: [{name: responder}]
"""


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tests import servers
    from tests.helpers import free_port

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = [("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db")]
        if args.postgres:
            urls.append(("postgresql", args.postgres))
        for store_name, url in urls if "clearing" in args.parts else []:
            for block in ("resume", "released"):
                runs = [await clearing(url, args.incidents, block) for _ in range(args.repeat)]
                results.append(_median(runs) | {"store": store_name})
                print(json.dumps(results[-1]), flush=True)
        if "resync" not in args.parts:
            return results
        port = free_port()
        with servers.alertmanager(Path(tmp), port, ALERTMANAGER_CONFIG) as alertmanager:
            await push(alertmanager, args.alerts)
            for store_name, url in urls:
                runs = [
                    await resync_cost(url, alertmanager, args.alerts) for _ in range(args.repeat)
                ]
                for i in range(2):
                    results.append(_median([r[i] for r in runs]) | {"store": store_name})
                    print(json.dumps(results[-1]), flush=True)
    return results


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' figures, each the median over the runs (labels from the first)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and key not in ("incidents", "alerts", "held"):
            out[key] = statistics.median(r[key] for r in runs)
    out["runs"] = len(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="also on this PostgreSQL URL")
    parser.add_argument("--parts", nargs="+", default=["clearing", "resync"])
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
