"""The reconciler: leases against Prefect's real flow-run states across a Prefect restart.

This test runs its own Prefect server (`prefect server start`, SQLite) and flow runner, the
way `responder up` does, so that it can kill the server and start it again. The flow runner
is stopped while the run is created: the run waits, scheduled, through the outage. (A run
whose own process talks to Prefect during the outage depends on that process's client
retries, which is Prefect's business; docs/operations.md says how to configure workers.)
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.authoring.demo import DemoService
from responder.control import leases
from responder.runtime.service import Service
from responder.runtime.supervisor import Supervisor
from tests.helpers import app_client, fixture_json, free_port, make_settings, wait_for

pytestmark = pytest.mark.prefect

JSON = {"content-type": "application/json"}
LEASE = 4.0


@pytest.fixture
async def own_prefect(tmp_path: Path) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(tmp_path / "prefect-data", free_port(), None)
    supervisor.start(ready_timeout=120)
    try:
        yield supervisor
    finally:
        supervisor.stop()


async def flow_run_state(api_url: str, flow_run_id: str) -> str | None:
    async with httpx.AsyncClient() as http:
        run = (await http.get(f"{api_url}/flow_runs/{flow_run_id}")).json()
    return run["state"]["type"] if run["state"] else None


async def test_a_prefect_restart_leaves_no_lease_stuck(
    own_prefect: Supervisor, tmp_path: Path, rules_dir: Path, demo_service: DemoService
) -> None:
    settings = make_settings(
        tmp_path,
        rules_dir,
        rule_vars={"service_control_url": demo_service.url},
        lease_seconds=LEASE,
        poll_seconds=0.5,
    )
    server, runner = own_prefect.children
    assert server.name == "prefect-server" and server.process is not None
    await wait_for(lambda: _deployed(own_prefect.api_url), timeout=120, every=0.5)
    runner.stop()  # the run will wait, scheduled, until the runner is back
    own_prefect.children.remove(runner)

    service = Service(settings, prefect_api_url=own_prefect.api_url)
    await service.start()
    client = app_client(service)
    try:
        body = fixture_json("firing_single_servicedown")
        body["alerts"][0]["labels"].update(instance="host-rc", service="checkout")
        await client.post("/webhook/alertmanager", json=body, headers=JSON)

        async def flow_run() -> str | None:
            rows = (await client.get("/api/v1/decisions")).json()["decisions"]
            return next((d["flow_run_id"] for d in rows if d["flow_run_id"]), None)

        flow_run_id = await wait_for(flow_run, timeout=60)
        assert await flow_run_state(own_prefect.api_url, flow_run_id) == "SCHEDULED"

        # Prefect dies while the run waits. Its lease expires, but without an answer from
        # Prefect the decision is not ended: the key stays held (safe).
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        await asyncio.sleep(LEASE * 2)
        assert (await leases.guard_state(service.store))["leases"] == []  # expired, not freed
        [decision] = (await client.get("/api/v1/decisions")).json()["decisions"]
        assert decision["flow_run_state"] is None
        assert await service.store.leases.count() == 2  # key and host mutex

        # Prefect comes back with its database: the run is still scheduled, so the lease is
        # renewed; the runner comes back and runs it; the key is free again.
        server.start()
        own_prefect.wait_for_prefect(120)
        await wait_for(lambda: _lease_renewed(service), timeout=30)
        assert await flow_run_state(own_prefect.api_url, flow_run_id) == "SCHEDULED"
        runner.start()
        own_prefect.children.append(runner)

        async def finished() -> dict[str, Any] | None:
            [row] = (await client.get("/api/v1/decisions")).json()["decisions"]
            return row if row["flow_run_state"] else None

        row = await wait_for(finished, timeout=120, every=0.5)
        assert row["flow_run_state"] == "COMPLETED"
        assert await service.store.leases.count() == 0
        assert demo_service.restarts == [("host-rc", "checkout")]
    finally:
        await client.aclose()
        await service.stop()


async def _deployed(api_url: str) -> bool:
    """The flow runner has registered the flows' deployments."""
    from flows import flow_names

    async with httpx.AsyncClient() as http:
        response = await http.post(f"{api_url}/deployments/filter", json={})
    return response.status_code == 200 and len(response.json()) >= len(flow_names())


async def _lease_renewed(service: Service) -> bool:
    """Both names are live again (guard_state lists live leases only)."""
    return len((await leases.guard_state(service.store))["leases"]) == 2
