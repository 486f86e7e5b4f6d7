"""Resync on taking the lead, against a real Alertmanager (Debian prometheus-alertmanager):
what fired or resolved while no replica was listening is recovered from its v2 API.

Alertmanager's webhook points at a port nobody listens on, so no webhook ever arrives.
Responder leads (no Prefect: admitted decisions are recorded, nothing is dispatched).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.runtime.service import Service
from tests import servers
from tests.helpers import fixture_json, free_port, make_settings, wait_for

pytestmark = pytest.mark.alertmanager

CONFIG = """
route:
  receiver: responder
  group_wait: 1h
  routes:
    - matchers: ['team="other"']
      receiver: other
receivers:
  - name: responder
    webhook_configs: [{{url: "http://127.0.0.1:{port}/webhook/alertmanager"}}]
  - name: other
    webhook_configs: [{{url: "http://127.0.0.1:{port}/other"}}]
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    config = CONFIG.format(port=free_port())  # nobody listens there
    with servers.alertmanager(tmp_path, free_port(), config) as url:
        yield url


async def push(alertmanager: str, instance: str, **labels: str) -> dict[str, Any]:
    """Post an alert to Alertmanager (its start to the microsecond, as some clients send
    it); return the alert as a webhook would carry it."""
    alert: dict[str, Any] = {
        "labels": {
            "alertname": "ServiceDown",
            "severity": "critical",
            "instance": instance,
            "service": "checkout",
            **labels,
        },
        "annotations": {"summary": "service down"},
        "startsAt": datetime.now(UTC).isoformat(),
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{alertmanager}/api/v2/alerts", json=[alert])
        assert response.status_code == 200, response.text
        [listed] = [
            a
            for a in (await http.get(f"{alertmanager}/api/v2/alerts")).json()
            if a["labels"]["instance"] == instance
        ]
    return {**alert, "status": "firing", "fingerprint": listed["fingerprint"]}


async def silence(alertmanager: str, instance: str) -> None:
    now = datetime.now(UTC)
    body = {
        "matchers": [{"name": "instance", "value": instance, "isRegex": False}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test",
        "comment": "suppressed",
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{alertmanager}/api/v2/silences", json=body)
        assert response.status_code == 200, response.text


async def listed(alertmanager: str) -> int:
    async with httpx.AsyncClient() as http:
        return len((await http.get(f"{alertmanager}/api/v2/alerts")).json())


async def verdicts(service: Service) -> dict[str, list[str]]:
    """instance → verdicts, oldest first."""
    rows = await service.store.decisions.recent(limit=1000)
    found: dict[str, list[str]] = {}
    for row in reversed(rows):
        found.setdefault(row["labels"]["instance"], []).append(row["verdict"])
    return found


async def test_a_new_leader_recovers_what_fired_and_resolved_while_nobody_listened(
    alertmanager: str, tmp_path: Path, rules_dir: Path
) -> None:
    settings = make_settings(tmp_path, rules_dir, alertmanager_url=alertmanager)

    # Before the outage: host-held fired and was decided; Alertmanager has never heard of
    # it (it resolved while Responder was down).
    # host-seen fired and its webhook arrived, with its start to the microsecond; the API
    # lists it to the millisecond: the same incident, not to be decided again.
    # (No resync here: it could race the webhook for host-seen.)
    before = Service(make_settings(tmp_path, rules_dir))
    await before.start()
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["labels"].update(instance="host-held", service="checkout")
    body["alerts"].append(await push(alertmanager, "host-seen"))
    await before.store.inbox.add("alertmanager", json.dumps(body).encode())
    before.loop.wake.set()

    async def held() -> bool:
        found = await verdicts(before)
        return found.get("host-held") == found.get("host-seen") == ["admitted"]

    await wait_for(held, timeout=30)
    await before.stop()

    # While nobody listens: one alert fires for Responder, one is silenced, one goes to
    # another receiver.
    await push(alertmanager, "host-new")
    await push(alertmanager, "host-silenced")
    await silence(alertmanager, "host-silenced")
    await push(alertmanager, "host-other", team="other")
    await wait_for(lambda: _count_is(alertmanager, 4), timeout=30)

    after = Service(settings)
    await after.start()
    try:

        async def recovered() -> dict[str, list[str]] | None:
            found = await verdicts(after)
            return found if "host-new" in found and len(found["host-held"]) == 2 else None

        found = await wait_for(recovered, timeout=60)
        assert found["host-new"] == ["admitted"]
        assert found["host-held"] == ["admitted", "resolved"]
        assert found["host-seen"] == ["admitted"]
        assert "host-silenced" not in found  # Alertmanager would not have sent it
        assert "host-other" not in found  # routed to another receiver
        firing = {a.labels["instance"] for a in await after.store.alerts.firing()}
        assert firing == {"host-new", "host-seen"}
    finally:
        await after.stop()

    # Another takeover with nothing missed records nothing new.
    again = Service(settings)
    await again.start()
    try:

        async def resynced() -> bool:
            return again.recovery.resyncs >= 1

        await wait_for(resynced, timeout=30)
        await asyncio.sleep(1)  # the engine would have decided anything committed by now
        assert await verdicts(again) == found
    finally:
        await again.stop()


async def _count_is(alertmanager: str, count: int) -> bool:
    return await listed(alertmanager) == count
