"""Nothing missed stays missed: the leader's periodic resync and the fetch of a truncated
webhook's group, against a real Alertmanager (Debian prometheus-alertmanager) delivering to
Responder's real HTTP server; and the race of a resync with a webhook, on the engine.

Responder runs without Prefect: admitted decisions are recorded, nothing is dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from responder.events.webhook import AlertmanagerWebhook
from responder.orchestration.alertmanager import Alertmanager
from responder.runtime.recovery import Recovery
from responder.runtime.resync import resync
from responder.runtime.service import Service
from responder.storage.store import Store
from tests import servers
from tests.helpers import (
    POSTGRES_URL,
    fixture_json,
    free_port,
    make_settings,
    reset_postgres,
    wait_for,
)

# Alertmanager sends each group once (after 1 s) and not again for an hour: what the first
# webhook left out is recovered by Responder or not at all.
CONFIG = """
route:
  receiver: responder
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1h
  repeat_interval: 4h
receivers:
  - name: responder
    webhook_configs:
      - url: http://127.0.0.1:{port}/webhook/alertmanager
        max_alerts: {max_alerts}
"""


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def verdicts(service: Service) -> dict[str, list[str]]:
    """instance → verdicts, oldest first."""
    rows = await service.store.decisions.recent(limit=1000)
    found: dict[str, list[str]] = {}
    for row in reversed(rows):
        found.setdefault(row["labels"]["instance"], []).append(row["verdict"])
    return found


async def push(alertmanager: str, *instances: str, ends_at: str | None = None) -> None:
    """Post ServiceDown alerts for these instances to Alertmanager (resolved if `ends_at`)."""
    alerts: list[dict[str, Any]] = [
        {
            "labels": {
                "alertname": "ServiceDown",
                "severity": "critical",
                "instance": instance,
                "service": "checkout",
            },
            "annotations": {"summary": "service down"},
            "startsAt": "2026-12-01T10:00:00Z",
            **({"endsAt": ends_at} if ends_at else {}),
        }
        for instance in instances
    ]
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{alertmanager}/api/v2/alerts", json=alerts)
        assert response.status_code == 200, response.text


@contextlib.asynccontextmanager
async def responder_behind(
    tmp_path: Path, rules_dir: Path, *, max_alerts: int, **overrides: Any
) -> AsyncIterator[tuple[str, Service]]:
    """A real Alertmanager delivering to Responder's real HTTP server; (its URL, the service).

    With `alertmanager_url=True` among the overrides, Responder is told Alertmanager's URL.
    """
    port, am_port = free_port(), free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    if overrides.pop("alertmanager_url", False):
        overrides["alertmanager_url"] = am_url
    settings = make_settings(tmp_path, rules_dir, port=port, **overrides)
    config = CONFIG.format(port=port, max_alerts=max_alerts)
    with servers.alertmanager(tmp_path, am_port, config):
        service = Service(settings)
        server, task = await servers.serve_in_process(settings, service)
        try:
            yield am_url, service
        finally:
            server.should_exit = True
            await task


INSTANCES = [f"host-{n}" for n in range(5)]


@pytest.mark.alertmanager
async def test_a_truncated_webhook_has_its_whole_group_decided(
    tmp_path: Path, rules_dir: Path
) -> None:
    fetched = metric("responder_truncated_alerts_total", fetched="true")
    async with responder_behind(
        tmp_path, rules_dir, max_alerts=2, alertmanager_url=True, resync_interval=0
    ) as (alertmanager, service):

        async def resynced() -> bool:
            return service.recovery.resyncs >= 1

        await wait_for(resynced)  # the takeover resync is over: it cannot be what recovers
        await push(alertmanager, *INSTANCES)

        async def all_decided() -> dict[str, list[str]] | None:
            found = await verdicts(service)
            return found if len(found) == len(INSTANCES) else None

        found = await wait_for(all_decided, timeout=30)
        assert found == {instance: ["admitted"] for instance in INSTANCES}
        assert metric("responder_truncated_alerts_total", fetched="true") - fetched == 3
        # One webhook of 2 alerts, then the 3 fetched: nothing decided twice.
        await asyncio.sleep(1)
        assert await verdicts(service) == found


@pytest.mark.alertmanager
async def test_a_truncated_webhook_without_alertmanager_url_is_logged_and_counted(
    tmp_path: Path, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unfetched = metric("responder_truncated_alerts_total", fetched="false")
    caplog.set_level(logging.WARNING, logger="responder.runtime.recovery")
    async with responder_behind(tmp_path, rules_dir, max_alerts=2) as (alertmanager, service):
        await push(alertmanager, *INSTANCES)

        async def counted() -> bool:
            return metric("responder_truncated_alerts_total", fetched="false") - unfetched == 3

        await wait_for(counted, timeout=30)
        assert any(
            "left 3 alerts" in r.getMessage() and "alertmanager_url" in r.getMessage()
            for r in caplog.records
        )
        found = await verdicts(service)
        assert len(found) == 2  # only what the webhook carried
        assert all(v == ["admitted"] for v in found.values())


@pytest.fixture
def unheard(tmp_path: Path) -> Iterator[str]:
    """An Alertmanager whose webhook goes to a port nobody listens on."""
    config = CONFIG.format(port=free_port(), max_alerts=0)
    with servers.alertmanager(tmp_path, free_port(), config) as url:
        yield url


@pytest.mark.alertmanager
async def test_the_leader_resyncs_periodically(
    unheard: str, tmp_path: Path, rules_dir: Path
) -> None:
    failures = metric("responder_resync_failures_total", kind="periodic")
    settings = make_settings(tmp_path, rules_dir, alertmanager_url=unheard, resync_interval=1)
    service = Service(settings)
    await service.start()
    try:

        async def resynced() -> bool:
            return service.recovery.resyncs >= 1

        await wait_for(resynced)  # the takeover resync is over: it cannot be what recovers
        await push(unheard, "host-missed")

        async def decided() -> dict[str, list[str]] | None:
            found = await verdicts(service)
            return found if found.get("host-missed") else None

        assert await wait_for(decided, timeout=15) == {"host-missed": ["admitted"]}

        # It resolves in Alertmanager; that webhook is lost too.
        await push(unheard, "host-missed", ends_at=datetime.now(UTC).isoformat())

        async def resolved() -> dict[str, list[str]] | None:
            found = await verdicts(service)
            return found if len(found["host-missed"]) == 2 else None

        assert await wait_for(resolved, timeout=15) == {"host-missed": ["admitted", "resolved"]}
        assert await service.store.alerts.firing() == []
        resyncs = service.recovery.resyncs
        await asyncio.sleep(2.5)
        assert service.recovery.resyncs >= resyncs + 1  # still resyncing, nothing new
        assert await verdicts(service) == {"host-missed": ["admitted", "resolved"]}
        assert metric("responder_resync_failures_total", kind="periodic") == failures
    finally:
        await service.stop()
    # Stepping down ends the resyncs.
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "resync"]


async def test_a_failed_periodic_resync_is_counted_and_tried_again(
    tmp_path: Path, rules_dir: Path
) -> None:
    failures = metric("responder_resync_failures_total", kind="periodic")
    nobody = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(tmp_path, rules_dir, alertmanager_url=nobody, resync_interval=0.2)
    service = Service(settings)
    service.recovery._takeover_attempts = 1  # straight to the periodic resyncs
    await service.start()
    try:

        async def failed_twice() -> bool:
            return metric("responder_resync_failures_total", kind="periodic") - failures >= 2

        await wait_for(failed_twice, timeout=15)
        assert service.leading and service.engine_alive
    finally:
        await service.stop()


class Listing(Alertmanager):
    """An Alertmanager that lists these alerts (as `GET /api/v2/alerts` does)."""

    def __init__(self, alerts: list[dict[str, Any]]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.listed = alerts

    async def alerts(self, receiver: str | None, labels: Any = None) -> list[dict[str, Any]]:
        return self.listed


def as_listed(alert: dict[str, Any]) -> dict[str, Any]:
    return {**alert, "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_an_alert_a_resync_resolved_while_firing_is_never_decided_again(
    backend: str, tmp_path: Path, rules_dir: Path
) -> None:
    """A resync's list raced a webhook and resolved an alert that is still firing: when it
    comes back (the next webhook, the next resync) it is the same incident, fingerprint and
    start: never decided again, and its guard key stays as the first decision left it."""
    overrides: dict[str, Any] = {}
    if backend == "postgresql":
        await reset_postgres()
        overrides["database_url"] = POSTGRES_URL
    service = Service(make_settings(tmp_path, rules_dir, **overrides))
    await service.start()
    body = fixture_json("firing_single_servicedown")
    [alert] = body["alerts"]
    try:
        await service.accept("alertmanager", json.dumps(body).encode())

        async def decided(count: int) -> dict[str, list[str]] | None:
            found = await verdicts(service)
            return found if len(found.get("host-1", [])) == count else None

        assert await wait_for(lambda: decided(1)) == {"host-1": ["admitted"]}
        leases = await service.store.leases.count()

        # The resync's list does not have it: resolved.
        nothing = Listing([])
        assert await resync(nothing, "responder", service.store) == (0, 1)
        service.loop.wake.set()
        assert await wait_for(lambda: decided(2)) == {"host-1": ["admitted", "resolved"]}

        # Alertmanager still has it and sends it again: a duplicate.
        await service.accept("alertmanager", json.dumps(body).encode())
        found = await wait_for(lambda: decided(3))
        assert found == {"host-1": ["admitted", "resolved", "duplicate"]}

        # The next resync lists it: nothing to commit (it would only be a duplicate again).
        listing = Listing([as_listed(alert)])
        assert await resync(listing, "responder", service.store) == (0, 0)
        # Committed anyway (an older Responder's resync body): a duplicate, not a decision.
        body["groupKey"] = '{}:{responder="resync"}'
        await service.accept("alertmanager", json.dumps(body).encode())
        found = await wait_for(lambda: decided(4))
        assert found == {"host-1": ["admitted", "resolved", "duplicate", "duplicate"]}
        rows = await service.store.decisions.recent(limit=10)
        # Its identity (fingerprint, start, status) was handled: never a new incident.
        assert [r["reason"] for r in rows] == [
            "firing alert already handled (inbox #1)",
            "firing alert already handled (inbox #1)",
            "fact retracted",
            "every check passed; names taken",
        ]
        assert len({r["incident"] for r in rows}) == 1
        assert await service.store.leases.count() == leases
        await nothing.close()
        await listing.close()
    finally:
        await service.stop()


async def test_a_group_is_fetched_once_at_a_time_and_once_more_if_truncated_again(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await store.migrate()
    gate = asyncio.Event()
    calls: list[tuple[str | None, dict[str, str]]] = []

    class Slow(Alertmanager):
        async def alerts(
            self, receiver: str | None, labels: Mapping[str, str] | None = None
        ) -> list[dict[str, Any]]:
            calls.append((receiver, dict(labels or {})))
            await gate.wait()
            return []

    recovery = Recovery(store, "http://127.0.0.1:9", "responder", interval=0, wake=lambda: None)
    recovery._alertmanager = Slow("http://127.0.0.1:9")  # as `start` would, without resyncing
    body = fixture_json("firing_single_servicedown")
    body.update(truncatedAlerts=3, groupLabels={"alertname": "ServiceDown", "team": 'a"b\\'})
    other = {**body, "groupKey": "{}:{other}", "groupLabels": {"alertname": "Other"}}
    try:
        recovery.truncated(AlertmanagerWebhook.model_validate(body))
        recovery.truncated(AlertmanagerWebhook.model_validate(other))
        await asyncio.sleep(0.1)  # both fetches are listing now
        for _ in range(2):
            recovery.truncated(AlertmanagerWebhook.model_validate(body))
        await asyncio.sleep(0.1)
        assert calls == [
            ("responder", {"alertname": "ServiceDown", "team": 'a"b\\'}),
            ("responder", {"alertname": "Other"}),
        ]
        gate.set()

        async def settled() -> bool:
            return not recovery._fetches

        await wait_for(settled)
        # The two truncations that came during the first fetch: one more fetch, not two.
        assert len(calls) == 3 and calls[2] == calls[0]
    finally:
        await recovery.stop()
        await store.close()
