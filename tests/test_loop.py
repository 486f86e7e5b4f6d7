"""The engine loop end to end through the store: chaining, fact persistence, timers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from responder.service import Service
from tests.conftest import fixture_json, make_settings

RULES = """
rules:
  - name: checkout-outage
    description: Two checkout hosts down at once is an outage of the service.
    match: ['alertname="ServiceDown"', 'service="checkout"']
    count: {at_least: 2, within: 5m}
    assert: {fact: service-outage, with: {service: "{{ alert.labels.service }}"}, ttl: 1h}
  - name: restart-one-host
    match: ['alertname="ServiceDown"']
    unless: [{fact: service-outage, where: ['service="{{ alert.labels.service }}"']}]
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}/{{ alert.labels.service }}"}
  - name: outage-over
    status: resolved
    match: ['alertname="ServiceDown"', 'service="checkout"']
    retract: [{fact: service-outage, where: ['service="checkout"']}]
"""


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    svc = Service(make_settings(tmp_path, rules), prefect_api_url=None)
    await svc.start()
    await svc.loop.step()
    yield svc
    await svc.stop()


async def feed(service: Service, name: str) -> None:
    await service.store.add_to_inbox("alertmanager", json.dumps(fixture_json(name)).encode())
    while await service.loop.step():
        pass


async def verdicts(service: Service) -> list[tuple[Any, ...]]:
    rows = reversed(await service.store.decisions(limit=1000))
    return [(r["labels"].get("instance"), r["rule"], r["verdict"]) for r in rows]


async def test_an_asserted_fact_stops_per_host_remediation_and_survives_restart(
    service: Service, tmp_path: Path
) -> None:
    await service.stop()  # drive the loop by hand, without its background task
    await service.store.migrate()
    await service.loop.rebuild()
    await feed(service, "firing_group_servicedown_3_hosts")
    assert await verdicts(service) == [
        ("host-1", "restart-one-host", "admitted"),
        # The second checkout alert fills the window: outage asserted, then the decision
        # for host-2 is no longer made, and host-3 is suppressed too.
        ("host-2", "checkout-outage", "asserted"),
        ("host-2", "restart-one-host", "unmatched"),
        ("host-3", "checkout-outage", "asserted"),
    ]
    [fact] = await service.store.live_facts(0)
    assert (fact.name, dict(fact.fields)) == ("service-outage", {"service": "checkout"})

    # After a restart the fact is rebuilt from the store: still no per-host restarts.
    rules_dir = tmp_path / "rules"
    again = Service(make_settings(tmp_path, rules_dir), prefect_api_url=None)
    await again.store.migrate()
    await again.loop.rebuild()
    assert [f.name for f in again.loop.engine.facts()] == ["service-outage"]
    await feed(again, "firing_group_with_stale_resolved_alert")
    rows = await verdicts(again)
    # payments is another service: its host is restarted. The resolved checkout alert
    # of host-1 retracts the outage.
    assert ("host-3", "restart-one-host", "admitted") in rows
    assert ("host-1", "outage-over", "asserted") in rows
    assert await again.store.live_facts(0) == []
    await again.store.close()


CATALOG_RULES = """
rules:
  - name: restart-unless-maintenance
    match: ['alertname="ServiceDown"']
    when: [{fact: service, where: ['name="{{ alert.labels.service }}"', 'tier!="0"']}]
    unless: [{fact: maintenance, where: ['instance="{{ alert.labels.instance }}"']}]
    run:
      flow: http-call
      parameters:
        url: "http://127.0.0.1:9/restart/{{ alert.labels.instance }}"
        json_body: {owner: "{{ service.owner }}"}
    guard: {key: "restart/{{ alert.labels.instance }}/{{ alert.labels.service }}"}
"""

CATALOG = """
services:
  checkout: {tier: 1, owner: team-checkout}
  payments: {tier: 0, owner: team-payments}
maintenance:
  - {labels: {instance: host-2}, until: 2099-01-01T00:00:00Z, reason: disk swap}
"""


async def test_catalog_facts_gate_rules_and_fill_templates(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(CATALOG_RULES)
    (tmp_path / "services.yaml").write_text(CATALOG)
    svc = Service(make_settings(tmp_path, rules), prefect_api_url=None)
    await svc.store.migrate()
    await svc.loop.rebuild()
    await feed(svc, "firing_group_servicedown_3_hosts")  # checkout on host-1, 2, 3
    await feed(svc, "firing_group_with_stale_resolved_alert")  # payments on host-3 (tier 0)
    rows = list(reversed(await svc.store.decisions(limit=100)))
    got = [(r["labels"]["instance"], r["labels"]["service"], r["verdict"]) for r in rows]
    assert got == [
        ("host-1", "checkout", "admitted"),
        ("host-2", "checkout", "unmatched"),  # in maintenance
        ("host-3", "checkout", "admitted"),
        ("host-1", "checkout", "resolved"),
        ("host-3", "payments", "unmatched"),  # tier 0: not automated by this rule
    ]
    assert rows[0]["parameters"]["json_body"] == {"owner": "team-checkout"}
    await svc.store.close()


async def test_the_running_engine_collects_young_garbage_less_often(tmp_path: Path) -> None:
    import gc

    from responder.loop import YOUNG_GC_THRESHOLD

    saved = gc.get_threshold()
    gc.set_threshold(700, *saved[1:])
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    svc = Service(make_settings(tmp_path, rules), prefect_api_url=None)
    try:
        await svc.start()
        for _ in range(100):
            if svc.loop.running:
                break
            await asyncio.sleep(0.01)
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *saved[1:])
    finally:
        await svc.stop()
        gc.set_threshold(*saved)
