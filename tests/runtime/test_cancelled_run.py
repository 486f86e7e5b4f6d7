"""A run cancelled from the Prefect UI (here: Prefect's API) while its alert still fires is
decided again, through the same guard, until `max_attempts` (a real Prefect server and
runner)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.authoring.demo import DemoService
from responder.runtime.service import Service
from tests.helpers import app_client, fixture_json, make_settings, wait_for

pytestmark = pytest.mark.prefect

# A run that calls its target, then waits minutes for a health check that never passes: a
# stuck remediation an SRE cancels.
STUCK = """
rules:
  - name: restart-stuck
    match: ['alertname="ServiceDown"']
    run:
      flow: http-call
      parameters:
        url: "{{ vars.service_control_url }}/start/{{ alert.labels.instance | segment }}"
        verify_url: "{{ vars.service_control_url }}/health/never/healthy"
        verify_within_seconds: 300
    guard:
      key: "restart/{{ alert.labels.instance }}"
      cooldown_failed: 1s
      max_attempts: 2
"""


@pytest.fixture
async def running(
    flow_runner: str, tmp_path: Path, demo_service: DemoService
) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "stuck.yaml").write_text(STUCK)
    settings = make_settings(tmp_path, rules, rule_vars={"service_control_url": demo_service.url})
    service = Service(settings, prefect_api_url=flow_runner)
    await service.start()
    client = app_client(service)
    yield client, service
    await client.aclose()
    await service.stop()


async def decisions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/decisions", params={"limit": 1000})
    return [d for d in reversed(response.json()["decisions"]) if d["rule"] == "restart-stuck"]


async def cancel_when_running(
    client: httpx.AsyncClient, api_url: str, demo_service: DemoService, attempt: int
) -> str:
    """Wait for the attempt's run to call its target, then cancel it as the UI would."""

    async def running_run() -> str | None:
        admitted = [d for d in await decisions(client) if d["verdict"] == "admitted"]
        if len(admitted) < attempt or not admitted[attempt - 1]["flow_run_id"]:
            return None
        flow_run_id = str(admitted[attempt - 1]["flow_run_id"])
        async with httpx.AsyncClient() as http:
            run = (await http.get(f"{api_url}/flow_runs/{flow_run_id}")).json()
        return flow_run_id if (run.get("state") or {}).get("type") == "RUNNING" else None

    flow_run_id = await wait_for(running_run, timeout=90, every=0.5)

    async def called() -> bool:  # RUNNING comes before the run's first step
        return len(demo_service.posts) >= attempt

    await wait_for(called, timeout=60, every=0.2)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{api_url}/flow_runs/{flow_run_id}/set_state",
            json={"state": {"type": "CANCELLING", "message": "cancelled by an SRE"}},
        )
        assert response.status_code in (200, 201), response.text
    return flow_run_id


async def test_a_run_cancelled_in_prefect_is_decided_again_until_max_attempts(
    running: tuple[httpx.AsyncClient, Service], demo_service: DemoService
) -> None:
    client, service = running
    assert service.dispatcher is not None
    api_url = service.dispatcher.api_url
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["labels"].update(instance="host-21")
    response = await client.post("/webhook/alertmanager", json=body)
    assert response.status_code == 200

    await cancel_when_running(client, api_url, demo_service, 1)

    async def refused_at_the_top() -> list[dict[str, Any]] | None:
        rows = [d for d in await decisions(client) if d["verdict"] != "duplicate"]
        return rows if rows and rows[-1]["refusal"] == "max_attempts" else None

    # The cancelled run's incident is decided again: a second run, which is cancelled too.
    second = await cancel_when_running(client, api_url, demo_service, 2)
    rows = await wait_for(refused_at_the_top, timeout=90, every=0.5)

    assert [(d["verdict"], d["flow_run_state"]) for d in rows] == [
        ("admitted", "CANCELLED"),
        ("admitted", "CANCELLED"),
        ("refused", None),
    ]
    assert rows[1]["flow_run_id"] == second
    assert rows[1]["reason"].startswith(f"re-examined: decision {rows[0]['id']}'s run ended ")
    assert [p for p, _ in demo_service.posts] == ["/start/host-21"] * 2  # one call per run
    assert await service.store.leases.count() == 0
    assert (await service.store.incidents.counts())["exhausted"] == 1
