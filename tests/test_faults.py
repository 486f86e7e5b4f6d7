"""Fault tests during an alert storm, against real `responder serve` processes:

- kill -9 of Responder in the middle of a 100k-alert storm, on SQLite and PostgreSQL;
- the leader of two replicas killed in the middle of a storm (PostgreSQL), with the takeover
  time measured;
- the Prefect server down for 60 s during a storm.

The storm is bench/load.py's load generator over real HTTP. Every alert acknowledged with 200
must end with a recorded decision, and no guard key may be admitted twice. The figures these
tests print are recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flows import flow_names
from responder.runtime.supervisor import Supervisor
from responder.storage.schema import decisions
from responder.storage.store import Store
from tests.helpers import POSTGRES_URL, free_port, reset_postgres, wait_for
from tests.test_bench import bench

load = bench("load")
JSON = {"content-type": "application/json"}
STORM = 100_000  # alerts in the kill -9 storm; Responder dies half-way


class Storm:
    """Eight senders posting the load generator's webhooks (20 alerts each) until `total`
    alerts are sent or `stop()`. Like Alertmanager behind a load balancer, a sender whose
    replica is gone retries the same body on another one; what no replica acknowledged with
    200 is not counted."""

    def __init__(self, urls: list[str], total: int, rules: int) -> None:
        self.urls = list(urls)
        self.total = total
        self.sender = load.Sender(rules=rules)
        self.sent = 0  # alerts put in webhooks so far
        self.acknowledged: list[dict[str, Any]] = []
        self.refused = 0  # bodies answered other than 200 (e.g. 503 while the store is gone)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(timeout=30)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send(i)) for i in range(8)]

    async def _send(self, n: int) -> None:
        while not self._stop.is_set() and self.sent < self.total:
            body, count = self.sender.webhook(20)
            self.sent += count
            while self.urls:
                url = self.urls[n % len(self.urls)]
                try:
                    response = await self._http.post(
                        f"{url}/webhook/alertmanager", content=body, headers=JSON
                    )
                except httpx.TransportError:
                    if url in self.urls:
                        self.urls.remove(url)
                    continue
                if response.status_code == 200:
                    self.acknowledged.extend(json.loads(body)["alerts"])
                else:
                    self.refused += 1
                break
            else:
                return  # no replica left

    async def until_acknowledged(self, count: int) -> None:
        while len(self.acknowledged) < count:
            assert any(not t.done() for t in self._tasks), "the storm ended early"
            await asyncio.sleep(0.05)

    async def finish(self, stop: bool = False) -> None:
        if stop:
            self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._http.aclose()


async def all_decided(database_url: str, acknowledged: list[dict[str, Any]]) -> dict[str, Any]:
    """Wait until every acknowledged alert has a decision; check no key was admitted twice."""
    store = Store(database_url)
    wanted = {a["fingerprint"] for a in acknowledged}

    async def missing() -> set[str]:
        async with store.transaction() as conn:
            rows = await conn.execute(select(decisions.c.incident))
            return wanted - {r.incident.split("@")[0] for r in rows}

    try:
        deadline = time.monotonic() + 400
        while (left := await missing()) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert not left, f"{len(left)} acknowledged alerts have no decision"
        checks: dict[str, Any] = await load._check(store, 0)
        assert checks["keys_admitted_twice"] == 0
        return {k: checks[k] for k in ("recorded", "admitted", "keys_admitted_twice")}
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "postgresql":
        await reset_postgres()
        return POSTGRES_URL
    return None


@pytest.mark.timeout(900)
async def test_kill_9_mid_storm_loses_no_acknowledged_alert(
    tmp_path: Path, database_url: str | None
) -> None:
    server = load.Server(tmp_path, rules=50, database_url=database_url)
    await server.wait_ready()
    storm = Storm([server.url], total=STORM, rules=50)
    storm.start()
    await storm.until_acknowledged(STORM // 2)
    os.kill(server.process.pid, signal.SIGKILL)  # no shutdown, no flush
    server.process.wait(10)
    await storm.finish(stop=True)

    restarted = load.Server(tmp_path, rules=50, database_url=database_url)
    try:
        await restarted.wait_ready()
        checks = await all_decided(restarted.database_url, storm.acknowledged)
        print(f"kill -9 after {len(storm.acknowledged)} acknowledged: {checks}")
    finally:
        restarted.stop()


@pytest.mark.postgres
@pytest.mark.timeout(900)
async def test_the_leader_killed_mid_storm_loses_nothing_and_acts_once(tmp_path: Path) -> None:
    await reset_postgres()
    fast = {"RESPONDER_LEADER_CHECK_SECONDS": "0.5"}
    replicas = [
        load.Server(tmp_path / name, rules=50, database_url=POSTGRES_URL, extra_env=fast)
        for name in ("a", "b")
    ]
    try:
        for replica in replicas:
            await replica.wait_ready()

        async def leader_state(replica: Any) -> bool:
            async with httpx.AsyncClient() as http:
                state = (await http.get(f"{replica.url}/readyz")).json()
            return bool(state["checks"]["leader"])

        async def one_leader() -> list[bool] | None:
            leading = [await leader_state(r) for r in replicas]
            return leading if sum(leading) == 1 else None

        leading = await wait_for(one_leader, timeout=30)
        leader, follower = replicas if leading[0] else replicas[::-1]

        storm = Storm([r.url for r in replicas], total=30_000, rules=50)
        storm.start()
        await storm.until_acknowledged(10_000)
        leader.process.send_signal(signal.SIGKILL)  # its session and advisory lock just end
        killed = time.monotonic()
        while not await leader_state(follower):
            assert time.monotonic() - killed < 30, "no takeover within 30 s"
            await asyncio.sleep(0.05)
        takeover = time.monotonic() - killed
        await storm.finish()
        checks = await all_decided(POSTGRES_URL, storm.acknowledged)
        print(
            f"leader killed after 10,000 acknowledged; takeover {takeover:.2f} s; "
            f"{len(storm.acknowledged)} acknowledged in all; {checks}"
        )
        assert takeover < 10
    finally:
        for replica in replicas:
            if replica.process.poll() is None:
                replica.stop()


async def _prefect_runs(api: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        while True:  # Prefect pages at 200
            page = await http.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"tags": {"all_": ["responder"]}}, "offset": len(runs)},
            )
            page.raise_for_status()
            if not page.json():
                return runs
            runs.extend(page.json())


@pytest.mark.prefect
@pytest.mark.timeout(900)
async def test_prefect_down_60_s_mid_storm_dispatches_everything_admitted_once(
    tmp_path: Path,
) -> None:
    # A Prefect server of its own, so that it can be killed; the flow runner only registers
    # the deployments and is stopped: the runs stay scheduled, and only dispatch is tested.
    prefect = Supervisor(tmp_path / "prefect", free_port(), None)
    prefect.start(ready_timeout=120)
    try:
        prefect_server, runner = prefect.children

        async def deployments() -> bool:
            async with httpx.AsyncClient() as http:
                response = await http.post(f"{prefect.api_url}/deployments/filter", json={})
            return response.status_code == 200 and len(response.json()) >= len(flow_names())

        await wait_for(deployments, timeout=120, every=0.5)
        runner.stop()
        prefect.children.remove(runner)
        server = load.Server(tmp_path, rules=1, database_url=None, prefect_api_url=prefect.api_url)
        await server.wait_ready()
        try:
            await _storm_through_a_prefect_outage(server, prefect, prefect_server)
        finally:
            server.stop()
    finally:
        prefect.stop()


async def _storm_through_a_prefect_outage(server: Any, prefect: Supervisor, child: Any) -> None:
    async with httpx.AsyncClient(timeout=30) as http:

        async def get(path: str) -> httpx.Response:
            return await http.get(f"{server.url}{path}")

        os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait(10)
        down = time.monotonic()
        storm = Storm([server.url], total=10_000, rules=1)  # Alert0 on up to 200 hosts
        storm.start()
        await storm.finish()
        checks = await all_decided(server.database_url, storm.acknowledged)
        keys = {
            a["labels"]["instance"]
            for a in storm.acknowledged
            if a["labels"]["alertname"] == "Alert0" and a["status"] == "firing"
        }
        assert checks["admitted"] == len(keys) > 150

        # While Prefect is away: not reachable in /readyz and /metrics, nothing dispatched.
        async def shows_outage() -> bool:
            readyz = (await get("/readyz")).json()
            exposition = (await get("/metrics")).text
            return readyz["checks"]["prefect"] is False and (
                "responder_prefect_reachable 0.0" in exposition
            )

        await wait_for(shows_outage, timeout=30)
        admitted = await _admitted(http, server.url)
        assert len(admitted) == len(keys) and not any(d["flow_run_id"] for d in admitted)

        await asyncio.sleep(max(0.0, 60 - (time.monotonic() - down)))
        child.start()
        prefect.wait_for_prefect(120)
        back = time.monotonic()

        async def started() -> bool:
            return any(d["flow_run_id"] for d in await _admitted(http, server.url))

        await wait_for(started, timeout=60, every=0.2)
        first = time.monotonic() - back

        async def dispatched() -> list[dict[str, Any]] | None:
            rows = await _admitted(http, server.url)
            return rows if all(d["flow_run_id"] for d in rows) else None

        admitted = await wait_for(dispatched, timeout=180, every=1)
        caught_up = time.monotonic() - back
        # Waiting creations are woken when the poll finds Prefect healthy again, not left
        # to sleep out their backoff (up to 30 s). The rest is Prefect's (SQLite) pace: a
        # clean-clone run here took 11.1 s, so the bound sits between that and the backoff.
        assert first < 20
        assert (await get("/readyz")).json()["checks"]["prefect"] is True
        runs = await _prefect_runs(prefect.api_url)
        assert sorted(r["id"] for r in runs) == sorted(d["flow_run_id"] for d in admitted)
        print(
            f"Prefect down {back - down:.0f} s; {len(storm.acknowledged)} alerts acknowledged, "
            f"{len(keys)} admitted; the first flow run created {first:.1f} s and the last "
            f"{caught_up:.1f} s after Prefect was back; "
            f"{len(runs)} flow runs"
        )


async def _admitted(http: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "verdict": "admitted"}
        if before is not None:
            params["before_id"] = before
        page = (await http.get(f"{url}/api/v1/decisions", params=params)).json()["decisions"]
        if not page:
            return rows
        rows.extend(page)
        before = page[-1]["id"]
