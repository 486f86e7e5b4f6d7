"""End to end with a real Alertmanager (Debian prometheus-alertmanager) on 127.0.0.1.

Alerts are pushed into Alertmanager's /api/v2/alerts. Alertmanager delivers webhooks, with a
bearer token, to Responder's real HTTP server; Responder runs a real flow on a real Prefect
server that calls a local HTTP target. Alertmanager keeps resending the group; the target must
still be called exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from responder.authoring.demo import DemoService
from responder.intake.app import create_app
from responder.runtime.service import Service
from tests import servers
from tests.helpers import free_port, make_settings, wait_for

pytestmark = [pytest.mark.alertmanager, pytest.mark.prefect]

TOKEN = "e2e-secret-token"


@pytest.fixture
def alertmanager_port() -> int:
    return free_port()


@pytest.fixture
async def responder_url(
    flow_runner: str,
    tmp_path: Path,
    rules_dir: Path,
    demo_service: DemoService,
    alertmanager_port: int,
) -> AsyncIterator[tuple[str, Service]]:
    """Responder's real HTTP server (uvicorn) on a free loopback port."""
    port = free_port()
    rule = rules_dir / "restart-service.yaml"
    rule.write_text(rule.read_text().replace("    guard:\n", "    guard:\n      silence: true\n"))
    settings = make_settings(
        tmp_path,
        rules_dir,
        port=port,
        bearer_token=TOKEN,
        rule_vars={"service_control_url": demo_service.url},
        alertmanager_url=f"http://127.0.0.1:{alertmanager_port}",
    )
    service = Service(settings, prefect_api_url=flow_runner)
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: _started(server), timeout=30)
    yield f"http://127.0.0.1:{port}", service
    server.should_exit = True
    await task


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


@pytest.fixture
def alertmanager(
    responder_url: tuple[str, Service], tmp_path: Path, alertmanager_port: int
) -> Iterator[str]:
    base, _ = responder_url
    config = f"""
route:
  receiver: responder
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 3s
receivers:
  - name: responder
    webhook_configs:
      - url: {base}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
"""
    with servers.alertmanager(tmp_path, alertmanager_port, config) as url:
        yield url


async def push_alert(alertmanager_url: str, **labels: str) -> None:
    alert: dict[str, Any] = {
        "labels": {"alertname": "ServiceDown", "severity": "critical", **labels},
        "annotations": {"summary": "service down"},
        "startsAt": datetime.now(UTC).isoformat(),
        "generatorURL": "http://127.0.0.1/graph",
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{alertmanager_url}/api/v2/alerts", json=[alert])
        assert response.status_code == 200, response.text


async def test_alertmanager_resends_but_the_target_is_called_once(
    alertmanager: str, responder_url: tuple[str, Service], demo_service: DemoService
) -> None:
    base, service = responder_url
    await push_alert(alertmanager, instance="host-7", service="checkout")
    headers = {"authorization": f"Bearer {TOKEN}"}

    async def all_decisions() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{base}/api/v1/decisions", params={"limit": 1000}, headers=headers
            )
            assert response.status_code == 200
            return list(response.json()["decisions"])

    async def completed() -> bool:
        rows = await all_decisions()
        return any(d["flow_run_state"] == "COMPLETED" for d in rows)

    async def resent_three_times() -> bool:
        rows = await all_decisions()
        return sum(d["verdict"] == "duplicate" for d in rows) >= 3

    await wait_for(completed, timeout=60)
    # Alertmanager repeats the unchanged group every few seconds; wait for three repeats.
    await wait_for(resent_three_times, timeout=60, every=0.5)
    rows = await all_decisions()
    assert [d["verdict"] for d in rows].count("admitted") == 1
    assert demo_service.restarts == [("host-7", "checkout")]
    assert await service.store.leases.count() == 0

    # While the restart ran, the alert was silenced with a link to its flow run; the
    # silence was lifted when the run ended.
    [admitted] = [d for d in rows if d["verdict"] == "admitted"]
    async with httpx.AsyncClient() as http:
        silences = (await http.get(f"{alertmanager}/api/v2/silences")).json()
    [silence] = [s for s in silences if s["createdBy"] == "responder"]
    assert admitted["flow_run_id"] in silence["comment"]
    assert {"name": "instance", "value": "host-7", "isRegex": False, "isEqual": True} in silence[
        "matchers"
    ]
    assert silence["status"]["state"] == "expired"


LADDER_PAGE = """
rules:
  - name: page-when-restarts-did-not-help
    match: ['alertname="ServiceDown"']
    when:
      - fact: exhausted
        where: ['rule="restart-crashed-service"', 'instance="{{ alert.labels.instance }}"']
    run:
      flow: http-call
      parameters:
        url: "{{ vars.service_control_url }}/page"
        json_body: {summary: "restarting {{ alert.labels.instance }} did not help"}
    guard: {key: "page/{{ alert.labels.instance }}", max_attempts: 1}
"""


@pytest.fixture
def ladder_rules(rules_dir: Path) -> Path:
    """The shipped restart rule with short cooldowns, and a page when its attempts run out."""
    rule = rules_dir / "restart-service.yaml"
    text = rule.read_text().replace("cooldown: 15m", "cooldown: 2s")
    rule.write_text(text.replace("cooldown_failed: 5m", "cooldown_failed: 2s"))
    (rules_dir / "page.yaml").write_text(LADDER_PAGE)
    return rules_dir


async def test_the_escalation_ladder_on_an_alert_that_stays_firing(
    ladder_rules: Path,
    alertmanager: str,
    responder_url: tuple[str, Service],
    demo_service: DemoService,
) -> None:
    """The restart completes but the alert keeps firing in Alertmanager: after the cooldown
    the restart is tried again (max_attempts 2), then the engine stops restarting and pages."""
    base, service = responder_url
    await push_alert(alertmanager, instance="host-8", service="checkout")
    headers = {"authorization": f"Bearer {TOKEN}"}

    async def paged() -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{base}/api/v1/decisions", params={"limit": 1000}, headers=headers
            )
        rows = list(reversed(response.json()["decisions"]))
        page = [d for d in rows if d["rule"] == "page-when-restarts-did-not-help"]
        return rows if page and page[0]["flow_run_state"] == "COMPLETED" else None

    rows = await wait_for(paged, timeout=150, every=0.5)
    restarts = [d for d in rows if d["rule"] == "restart-crashed-service"]
    assert [d["verdict"] for d in restarts if d["verdict"] != "duplicate"] == [
        "admitted",
        "admitted",
        "refused",
    ]
    assert [d["refusal"] for d in restarts if d["verdict"] == "refused"] == ["max_attempts"]
    assert demo_service.restarts == [("host-8", "checkout")] * 2
    pages = [body for path, body in demo_service.posts if path == "/page"]
    assert pages == [{"summary": "restarting host-8 did not help"}]
    assert await service.store.leases.count() == 0
