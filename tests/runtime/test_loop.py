"""The engine loop end to end through the store: chaining, fact persistence, timers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import event

from responder.control.guard import Guard
from responder.exceptions import StoreUnavailable
from responder.runtime.loop import EngineLoop
from responder.runtime.service import Service
from responder.storage.inbox import InboxSource
from responder.storage.store import Store
from tests import servers
from tests.helpers import POSTGRES_URL, fixture_json, free_port, make_settings, reset_postgres

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
    await service.store.inbox.add("alertmanager", json.dumps(fixture_json(name)).encode())
    while await service.loop.step():
        pass


async def verdicts(service: Service) -> list[tuple[Any, ...]]:
    rows = reversed(await service.store.decisions.recent(limit=1000))
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
    [fact] = await service.store.facts.live(0)
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
    assert await again.store.facts.live(0) == []
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
    rows = list(reversed(await svc.store.decisions.recent(limit=100)))
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

    from responder.runtime.loop import YOUNG_GC_THRESHOLD

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


# --- intake is never blocked by the engine --------------------------------------------

BIG_WEBHOOK_ALERTS = 5_000
# Probe latency bound. Before the engine's transactions were bounded, one 5,000-alert webhook
# held SQLite's write lock for its whole batch: probes waited 5 s and got 503.
PROBE_P99_SECONDS = 1.0
RSS_GROWTH_BYTES = 400 * 1_048_576
# Before, the engine's one transaction for the whole webhook lasted 14-21 s on SQLite and
# 14-27 s on PostgreSQL here (docs/benchmarks.md).
TRANSACTION_SECONDS = 2.0


class TransactionTimer:
    """The longest store transaction, from BEGIN to COMMIT or ROLLBACK."""

    def __init__(self, store: Store) -> None:
        self.seconds = 0.0
        self._open: dict[int, float] = {}
        engine = store.engine.sync_engine
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _begin(self, conn: Any) -> None:
        self._open[id(conn)] = time.monotonic()

    def _end(self, conn: Any) -> None:
        began = self._open.pop(id(conn), None)
        if began is not None:
            self.seconds = max(self.seconds, time.monotonic() - began)


def alert_like_the_fixture(template: dict[str, Any], n: int, status: str) -> dict[str, Any]:
    """The captured alert's shape, another host and fingerprint; without the optional fields
    (annotations, endsAt, generatorURL, env), so that 5,000 fit under max_body_bytes."""
    labels = {k: v for k, v in template["labels"].items() if k != "env"}
    labels.update(instance=f"host-{n}", service=f"svc-{n % 50}")
    return {
        **{k: v for k, v in template.items() if k in ("startsAt",)},
        "status": status,
        "labels": labels,
        "fingerprint": f"{n:016x}",
    }


def webhook_of(alerts: list[dict[str, Any]]) -> bytes:
    body = fixture_json("firing_group_servicedown_3_hosts")
    body["alerts"] = alerts
    return json.dumps(body, separators=(",", ":")).encode()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(420)
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_a_5000_alert_webhook_does_not_block_intake(
    tmp_path: Path, rules_dir: Path, backend: str
) -> None:
    """The shipped restart rule, one webhook of 5,000 ServiceDown alerts (each a decision
    through the guard), while small webhooks keep arriving: none gets 503, p99 stays low."""
    overrides: dict[str, Any] = {"port": free_port()}
    if backend == "postgresql":
        await reset_postgres()
        overrides["database_url"] = POSTGRES_URL
    settings = make_settings(tmp_path, rules_dir, **overrides)
    template = fixture_json("firing_group_servicedown_3_hosts")["alerts"][0]
    big = webhook_of(
        [alert_like_the_fixture(template, n, "firing") for n in range(BIG_WEBHOOK_ALERTS)]
    )
    assert len(big) <= settings.max_body_bytes
    service = Service(settings, prefect_api_url=None)
    longest = TransactionTimer(service.store)
    server, task = await servers.serve_in_process(settings, service)
    url = f"{settings.base_url}/webhook/alertmanager"
    statuses: list[int] = []
    latencies: list[float] = []
    peak_rss = baseline_rss = rss_bytes()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                url, content=big, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200, response.text
            started = time.monotonic()
            n = BIG_WEBHOOK_ALERTS
            while await service.store.inbox.backlog() and time.monotonic() - started < 300:
                n += 1
                probe = webhook_of([alert_like_the_fixture(template, n, "firing")])
                sent = time.monotonic()
                answer = await client.post(
                    url, content=probe, headers={"content-type": "application/json"}
                )
                latencies.append(time.monotonic() - sent)
                statuses.append(answer.status_code)
                peak_rss = max(peak_rss, rss_bytes())
                await asyncio.sleep(0.02)
            decided = time.monotonic() - started
        recorded = await service.store.decisions.recent(
            limit=BIG_WEBHOOK_ALERTS + len(statuses) + 10
        )
    finally:
        server.should_exit = True
        await task
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    print(
        f"{backend}: {len(statuses)} probes while {BIG_WEBHOOK_ALERTS} alerts were decided in "
        f"{decided:.1f} s: p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
        f"non-200 {sum(s != 200 for s in statuses)}, "
        f"RSS +{(peak_rss - baseline_rss) / 1_048_576:.0f} MB, "
        f"longest transaction {longest.seconds:.2f} s"
    )
    assert [s for s in statuses if s != 200] == []
    assert len(statuses) >= 10
    assert p99 < PROBE_P99_SECONDS
    assert peak_rss - baseline_rss < RSS_GROWTH_BYTES
    # The store's per-transaction work is bounded (on PostgreSQL: no long "idle in transaction").
    assert longest.seconds < TRANSACTION_SECONDS
    # Exactly once: every alert of the big webhook and every probe has one decision.
    incidents = [r["incident"].split("@")[0] for r in recorded]
    assert len(incidents) == len(set(incidents)) == BIG_WEBHOOK_ALERTS + len(statuses)


async def test_a_failure_mid_webhook_resumes_after_the_committed_alerts(
    tmp_path: Path, rules_dir: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook spans several transactions; one that fails rolls back alone, and the next
    process (as after kill -9) decides exactly the alerts not yet committed."""
    svc = Service(make_settings(tmp_path, rules_dir), prefect_api_url=None)

    def engine() -> EngineLoop:
        guard = Guard(store, 3600.0)
        book, catalog = svc.loop.book, svc.loop.catalog
        rule_vars = svc.settings.rule_vars
        return EngineLoop(store, guard, None, book, catalog, rule_vars=rule_vars, batch_items=4)

    template = fixture_json("firing_group_servicedown_3_hosts")["alerts"][0]
    alerts = [alert_like_the_fixture(template, n, "firing") for n in range(10)]
    await store.inbox.add("alertmanager", webhook_of(alerts))
    set_progress, calls = store.inbox.set_progress, []

    async def fail_the_second(conn: Any, inbox_id: int, items: int) -> None:
        calls.append(items)
        if len(calls) == 2:
            raise StoreUnavailable("store error: the disk went away")
        await set_progress(conn, inbox_id, items)

    monkeypatch.setattr(store.inbox, "set_progress", fail_the_second)
    first = engine()
    await first.rebuild()
    with pytest.raises(StoreUnavailable):
        await first.step()
    assert calls == [4, 8]
    assert len(await store.decisions.recent(limit=100)) == 4  # the first transaction's alerts
    monkeypatch.undo()

    again = engine()
    await again.rebuild()
    while await again.step():
        pass
    rows = await store.decisions.recent(limit=100)
    assert sorted(r["incident"].split("@")[0] for r in rows) == sorted(
        a["fingerprint"] for a in alerts
    )
    assert {r["verdict"] for r in rows} == {"admitted"}  # ten hosts: ten keys, each once
    assert await store.inbox.pending(10) == []


FIRING_FOR_RULES = """
rules:
  - name: restart-after-10m
    match: ['alertname="ServiceDown"']
    firing_for: 10m
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}"}
"""


async def test_timers_due_at_once_are_decided_in_short_transactions_each_once(
    tmp_path: Path, store: Store
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(FIRING_FOR_RULES)
    svc = Service(make_settings(tmp_path, rules), prefect_api_url=None)
    template = fixture_json("firing_group_servicedown_3_hosts")["alerts"][0]
    alerts = [alert_like_the_fixture(template, n, "firing") for n in range(10)]
    now = [datetime.fromisoformat(template["startsAt"]).timestamp()]
    loop = EngineLoop(
        store,
        Guard(store, 3600.0),
        None,
        svc.loop.book,
        svc.loop.catalog,
        batch_items=3,
        clock=lambda: now[0],
    )
    await loop.rebuild()
    await store.inbox.add("alertmanager", webhook_of(alerts))
    while await loop.step():
        pass
    assert {r["verdict"] for r in await store.decisions.recent(limit=100)} == {
        "unmatched"
    }  # not yet
    commits: list[object] = []
    event.listen(store.engine.sync_engine, "commit", commits.append)
    now[0] += 601
    await loop.step()
    rows = await store.decisions.recent(limit=100, verdict="admitted")
    assert sorted(r["incident"].split("@")[0] for r in rows) == sorted(
        a["fingerprint"] for a in alerts
    )
    assert len(commits) >= 4  # 10 timers, at most 3 per transaction
    await loop.step()  # nothing is due again
    assert len(await store.decisions.recent(limit=100)) == 20


async def test_an_events_batch_is_held_over_short_transactions(
    tmp_path: Path, rules_dir: Path, store: Store
) -> None:
    svc = Service(make_settings(tmp_path, rules_dir), prefect_api_url=None)
    loop = EngineLoop(
        store, Guard(store, 3600.0), None, svc.loop.book, svc.loop.catalog, batch_items=7
    )
    await loop.rebuild()
    events = [
        {"specversion": "1.0", "id": f"e-{n}", "source": "argo", "type": "deploy.finished"}
        for n in range(50)
    ]
    await store.inbox.add("cloudevents", json.dumps(events).encode())
    commits: list[object] = []
    event.listen(store.engine.sync_engine, "commit", commits.append)
    while await loop.step():
        pass
    held = await store.facts.live(0)
    assert sorted(f.fields["id"] for f in held) == sorted(e["id"] for e in events)
    assert len(commits) >= 8  # 50 events, at most 7 per transaction


PROBE_RULES = """
rules:
  - name: probe
    match: ['alertname="ServiceDown"']
    run: {flow: probe-flow, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "probe/{{ alert.labels.instance }}"}
"""


async def test_a_reload_checks_parameters_against_the_flow_files_as_they_are_now(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the flows' parameter models were read once per process: after a reload, a
    flow file that came to require a parameter was still checked as it was."""
    import flows.dsl
    from responder.decision.rules import load_rules
    from responder.decision.services import ServiceCatalog
    from responder.orchestration.flow_catalog import parameter_errors, reload_flows

    class Before(BaseModel):
        model_config = ConfigDict(extra="forbid")
        url: str

    class After(Before):
        port: int

    files = {"probe-flow": Before}
    monkeypatch.setattr(
        flows.dsl,
        "load_flow_files",
        lambda *args, **kwargs: {
            name: SimpleNamespace(spec=SimpleNamespace(parameters_model=model))
            for name, model in files.items()
        },
    )
    (tmp_path / "probe.yaml").write_text(PROBE_RULES)
    book = load_rules([tmp_path / "probe.yaml"], ["probe-flow"])
    loop = EngineLoop(
        store, Guard(store, 3600.0), None, book, ServiceCatalog(), check_parameters=parameter_errors
    )
    template = fixture_json("firing_group_servicedown_3_hosts")["alerts"][0]
    try:
        await loop.rebuild()
        await store.inbox.add(
            InboxSource.ALERTMANAGER, webhook_of([alert_like_the_fixture(template, 1, "firing")])
        )
        await loop.step()
        files["probe-flow"] = After  # the flow file changed: `port` is required now
        await loop.use(book, ServiceCatalog())
        await store.inbox.add(
            InboxSource.ALERTMANAGER, webhook_of([alert_like_the_fixture(template, 2, "firing")])
        )
        await loop.step()
    finally:
        reload_flows()  # the next test reads the real flow files
    rows = reversed(await store.decisions.recent(limit=10))
    assert [(r["labels"]["instance"], r["verdict"], r["reason"]) for r in rows] == [
        ("host-1", "admitted", "every check passed; names taken"),
        ("host-2", "error", "parameters do not fit flow 'probe-flow': port: Field required"),
    ]
