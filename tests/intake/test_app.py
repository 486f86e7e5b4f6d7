"""The HTTP API and the engine loop behind it, on real SQLite and PostgreSQL stores.

No Prefect server here: admitted decisions are recorded but not dispatched (see
tests/orchestration/test_dispatch.py for that).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import itertools
import json
import sqlite3
import subprocess
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from responder.authoring.check import refuse_errors
from responder.cli.operator import incident_state
from responder.control import leases
from responder.decision.rules import load_rules
from responder.exceptions import ConfigError
from responder.orchestration.flow_catalog import use_flow_dirs
from responder.runtime.service import Service
from responder.settings import load_settings
from tests.flows.test_sources import YAML_FLOW as NOTIFY_FLOW
from tests.helpers import (
    POSTGRES_URL,
    app_client,
    damage_tables,
    fixture_body,
    fixture_json,
    make_settings,
    reset_postgres,
    wait_for,
)

URL = "/webhook/alertmanager"
JSON = {"content-type": "application/json"}

ClientFactory = Callable[..., Any]
FLOW_RUN = "00000000-0000-0000-0000-000000000001"  # a flow run id no run has


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_client(
    backend: str, tmp_path: Path, rules_dir: Path
) -> AsyncIterator[ClientFactory]:
    services: list[Service] = []
    clients: list[httpx.AsyncClient] = []
    if backend == "postgresql":
        await reset_postgres()

    async def factory(
        check: Callable[[Any], None] | None = None, **overrides: Any
    ) -> tuple[httpx.AsyncClient, Service]:
        if backend == "postgresql":
            overrides.setdefault("database_url", POSTGRES_URL)
        settings = make_settings(tmp_path, rules_dir, **overrides)
        service = Service(settings, prefect_api_url=None, check=check)
        await service.start()
        services.append(service)
        client = app_client(service)
        clients.append(client)
        return client, service

    yield factory
    for client in clients:
        await client.aclose()
    for service in services:
        await service.stop()


async def post(client: httpx.AsyncClient, name: str, **headers: str) -> httpx.Response:
    return await client.post(URL, content=fixture_body(name), headers={**JSON, **headers})


async def decisions(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/v1/decisions", params={"limit": 1000, **params}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["decisions"]))


async def settled(service: Service) -> bool:
    return await service.store.inbox.backlog() == 0


async def test_accepts_a_real_payload_and_records_the_decision(make_client: ClientFactory) -> None:
    client, service = await make_client()
    response = await post(client, "firing_single_servicedown")
    assert response.status_code == 200
    assert response.json()["alerts"] == 1
    await wait_for(lambda: settled(service))
    [decision] = await decisions(client)
    assert decision["verdict"] == "admitted"
    assert decision["rule"] == "restart-crashed-service"
    assert decision["labels"]["instance"] == "host-1"
    assert decision["guard_key"] == "restart-crashed-service:restart-service/host-1/checkout"
    assert decision["parameters"]["restart_url"] == "http://127.0.0.1:9/restart/host-1/checkout"
    assert decision["flow_run_id"] is None  # no Prefect in this test


async def test_resends_are_duplicates(make_client: ClientFactory) -> None:
    client, service = await make_client()
    for _ in range(11):
        assert (await post(client, "firing_single_servicedown")).status_code == 200
    await wait_for(lambda: settled(service))
    verdicts = [d["verdict"] for d in await decisions(client)]
    assert verdicts == ["admitted"] + ["duplicate"] * 10
    held = (await leases.guard_state(service.store))["leases"]
    assert {lease["name"] for lease in held} == {
        "key:restart-crashed-service:restart-service/host-1/checkout",
        "mutex:host:host-1",
    }


def one_alert(starts_at: str, fingerprint: str, status: str = "firing") -> bytes:
    """The single ServiceDown webhook, its alert's start and fingerprint written otherwise."""
    body = fixture_json("firing_single_servicedown")
    [alert] = body["alerts"]
    alert.update(startsAt=starts_at, fingerprint=fingerprint, status=status)
    if status == "resolved":
        body["status"] = status
        alert["endsAt"] = "2026-11-25T18:30:00-05:00"
    return json.dumps(body).encode()


async def test_one_instant_in_three_notations_is_one_incident(make_client: ClientFactory) -> None:
    client, service = await make_client()
    for starts_at, fingerprint in [
        ("2026-11-25T23:17:23.549Z", "4c49c27c50dac262"),
        ("2026-11-26T00:17:23.549+01:00", "4C49C27C50DAC262"),
        ("2026-11-25T18:17:23.549000-05:00", "00004c49c27c50dac262"),
    ]:
        response = await client.post(URL, content=one_alert(starts_at, fingerprint), headers=JSON)
        assert response.status_code == 200, response.text
    await wait_for(lambda: settled(service))
    assert [d["verdict"] for d in await decisions(client)] == ["admitted", "duplicate", "duplicate"]
    [held] = service.loop.engine.held_alerts("4c49c27c50dac262")
    assert held.incident == "4c49c27c50dac262@2026-11-25T23:17:23.549000+00:00"

    # Its resolution, written in yet another notation, lets go of it.
    resolution = one_alert("2026-11-26T08:47:23.549+09:30", "4C49c27c50DAC262", "resolved")
    assert (await client.post(URL, content=resolution, headers=JSON)).status_code == 200
    await wait_for(lambda: settled(service))
    assert [d["verdict"] for d in await decisions(client)][-1] == "resolved"
    assert service.loop.engine.fact_count == 0
    assert (await client.get("/api/v1/explain/4C49C27C50DAC262")).json()["held"] == []


async def test_fixture_sequence_gives_one_decision_per_incident(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client()
    for name in [
        "firing_group_servicedown_3_hosts",  # checkout on host-1..3
        "firing_group_partially_resolved",  # host-1 resolved, 2 and 3 resent
        "resolved_group_servicedown_remaining_hosts",  # host-2, host-3 resolved
        "firing_group_with_stale_resolved_alert",  # host-1 (a later incident) + payments@host-3
        "firing_group_with_stale_resolved_alert",  # ...resent: the resolved alert is stale now
        "firing_repeat_notification",  # payments@host-3 returned: a new incident, key held
        "firing_group_diskalmostfull_2_hosts",  # no rule
        "resolved_group_diskalmostfull_2_hosts",
    ]:
        assert (await post(client, name)).status_code == 200
    await wait_for(lambda: settled(service))
    got = [
        (d["labels"].get("instance"), d["labels"].get("service"), d["alert_status"], d["verdict"])
        for d in await decisions(client)
    ]
    assert got == [
        ("host-1", "checkout", "firing", "admitted"),
        ("host-2", "checkout", "firing", "admitted"),
        ("host-3", "checkout", "firing", "admitted"),
        ("host-1", "checkout", "resolved", "resolved"),
        ("host-2", "checkout", "firing", "duplicate"),
        ("host-3", "checkout", "firing", "duplicate"),
        ("host-2", "checkout", "resolved", "resolved"),
        ("host-3", "checkout", "resolved", "resolved"),
        ("host-1", "checkout", "resolved", "resolved"),
        # The checkout restart on host-3 still holds the host's mutex (no Prefect here).
        ("host-3", "payments", "firing", "refused"),
        ("host-1", "checkout", "resolved", "duplicate"),
        ("host-3", "payments", "firing", "duplicate"),
        ("host-3", "payments", "firing", "refused"),
        ("host-2", None, "firing", "unmatched"),
        ("host-3", None, "firing", "unmatched"),
        ("host-2", None, "resolved", "resolved"),
        ("host-3", None, "resolved", "resolved"),
    ]
    # Resolved alerts retract their facts: only the two payments@host-3 incidents remain.
    assert service.loop.engine.fact_count == 2


async def test_a_held_key_refuses_a_new_incident(make_client: ClientFactory) -> None:
    client, service = await make_client()
    await post(client, "firing_single_servicedown")
    # Same service and host, a later start: a new incident, but the remediation is active.
    await post(client, "firing_single_servicedown_bearer_auth")
    await wait_for(lambda: settled(service))
    first, second = await decisions(client)
    assert first["verdict"] == "admitted"
    assert second["verdict"] == "refused"
    assert f"held by decision {first['id']}" in second["reason"]


async def test_an_expired_lease_ends_its_decision_as_lost(
    make_client: ClientFactory, rules_dir: Path
) -> None:
    rule = rules_dir / "restart-service.yaml"
    rule.write_text(rule.read_text().replace("cooldown_failed: 5m", "cooldown_failed: 0"))
    client, service = await make_client(lease_seconds=0.01)
    await post(client, "firing_single_servicedown")
    await wait_for(lambda: settled(service))
    await asyncio.sleep(0.05)
    await post(client, "firing_single_servicedown_bearer_auth")
    await wait_for(lambda: settled(service))
    rows = await decisions(client)
    # The new incident takes the key over; the lost run's decision ends as EXPIRED, and
    # that outcome goes back to the engine like any other.
    assert [(d["verdict"], d["flow_run_state"]) for d in rows] == [
        ("admitted", "EXPIRED"),
        ("admitted", None),
    ]
    outcomes = [f for f in service.loop.engine.facts() if f.name == "outcome"]
    assert [f.fields["state"] for f in outcomes] == ["EXPIRED"]


async def test_a_lost_run_cools_its_key_down_like_a_failure(make_client: ClientFactory) -> None:
    client, service = await make_client(lease_seconds=0.01)
    await post(client, "firing_single_servicedown")
    await wait_for(lambda: settled(service))
    await asyncio.sleep(0.05)
    await post(client, "firing_single_servicedown_bearer_auth")
    await wait_for(lambda: settled(service))
    second = (await decisions(client))[1]
    assert (second["verdict"], second["refusal"]) == ("refused", "cooldown")


async def test_restart_rebuilds_facts_without_deciding_again(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client()
    await post(client, "firing_group_servicedown_3_hosts")
    await wait_for(lambda: settled(service))
    await service.stop()
    client2, service2 = await make_client()
    assert service2.loop.engine.fact_count == 3
    await post(client2, "firing_group_partially_resolved")
    await wait_for(lambda: settled(service2))
    verdicts = [d["verdict"] for d in await decisions(client2)]
    assert verdicts == ["admitted"] * 3 + ["resolved", "duplicate", "duplicate"]
    assert service2.loop.engine.fact_count == 2


async def test_hostile_label_values_are_refused_before_the_guard(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client()
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["labels"]["service"] = "{{ vars.__class__ }}$(rm -rf /);`id`"
    await client.post(URL, content=json.dumps(body), headers=JSON)
    await wait_for(lambda: settled(service))
    [decision] = await decisions(client)
    assert decision["verdict"] == "error"
    assert decision["rule"] == "restart-crashed-service"
    assert decision["reason"].startswith("parameters do not fit flow 'restart-service': service:")
    assert "__class__" not in decision["reason"]  # the input is never echoed back
    assert decision["guard_key"] is None
    assert await service.store.decisions.active() == []


# --- errors ---------------------------------------------------------------------------


async def test_malformed_json_is_400(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    response = await client.post(URL, content=b'{"version": "4",', headers=JSON)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


async def test_wrong_content_type_is_415(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    body = fixture_body("firing_single_servicedown")
    response = await client.post(URL, content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert (await client.post(URL, content=body)).status_code == 415


async def test_a_compressed_body_is_415_not_400(make_client: ClientFactory) -> None:
    client, _ = await make_client(operator_token="op")
    body = gzip.compress(fixture_body("firing_single_servicedown"))
    gzipped = {**JSON, "content-encoding": "gzip"}
    for path, headers in [
        (URL, gzipped),
        ("/api/v1/events", gzipped),
        ("/api/v1/pause", {**gzipped, "authorization": "Bearer op"}),
    ]:
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 415, f"{path}: {response.text}"
        assert response.json()["error"] == "content encoding must be identity (uncompressed)"
        assert response.json()["received"] == "gzip"
    plain = await client.post(URL, content=gzip.decompress(body), headers=JSON)
    assert plain.status_code == 200


async def test_body_over_limit_is_413(make_client: ClientFactory) -> None:
    client, service = await make_client(max_body_bytes=2048)
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["annotations"]["description"] = "x" * 4096
    response = await client.post(URL, content=json.dumps(body), headers=JSON)
    assert response.status_code == 413
    assert "2048" in response.json()["error"]
    assert await service.store.inbox.backlog() == 0


async def test_schema_error_is_422_with_field_paths(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    body = fixture_json("firing_group_servicedown_3_hosts")
    del body["alerts"][1]["fingerprint"]
    body["alerts"][2]["status"] = "exploded"
    response = await client.post(URL, content=json.dumps(body), headers=JSON)
    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert fields == {"alerts.1.fingerprint", "alerts.2.status"}
    assert "exploded" not in response.text  # input is not echoed


async def test_bearer_token(make_client: ClientFactory) -> None:
    client, _ = await make_client(bearer_token="e2e-secret-token")
    assert (await post(client, "firing_single_servicedown")).status_code == 401
    wrong = await post(client, "firing_single_servicedown", authorization="Bearer nope")
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    # The header Alertmanager really sent with http_config.authorization.
    ok = await post(
        client, "firing_single_servicedown_bearer_auth", authorization="Bearer e2e-secret-token"
    )
    assert ok.status_code == 200
    assert (await client.get("/api/v1/decisions")).status_code == 401


async def test_basic_auth(make_client: ClientFactory) -> None:
    client, _ = await make_client(basic_username="am", basic_password="pw")

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert (
        await post(client, "firing_single_servicedown", authorization=basic("am", "pw"))
    ).status_code == 200
    assert (
        await post(client, "firing_single_servicedown", authorization=basic("am", "no"))
    ).status_code == 401
    assert (
        await post(client, "firing_single_servicedown", authorization="Basic !!!")
    ).status_code == 401


async def test_two_authorization_headers_are_400_whichever_comes_first(
    make_client: ClientFactory,
) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op")
    body = fixture_body("firing_single_servicedown")
    for pair in (["Bearer wh", "Bearer nope"], ["Bearer nope", "Bearer wh"]):
        headers = httpx.Headers([*JSON.items(), *(("authorization", v) for v in pair)])
        response = await client.post(URL, content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "more than one Authorization header",
            "field": "authorization",
        }
    both = httpx.Headers([("authorization", "Bearer op"), ("authorization", "Bearer op")])
    assert (await client.get("/api/v1/decisions", headers=both)).status_code == 400
    assert (await post(client, "firing_single_servicedown", authorization="Bearer wh")).is_success


async def test_a_webhook_is_parsed_once_the_engine_decides_from_the_intakes_parse(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from responder.events.webhook import AlertmanagerWebhook

    parsed: list[bytes] = []
    validate = AlertmanagerWebhook.model_validate_json

    def counted(data: bytes, **kwargs: Any) -> AlertmanagerWebhook:
        parsed.append(data)
        return validate(data, **kwargs)

    monkeypatch.setattr(AlertmanagerWebhook, "model_validate_json", counted)
    client, service = await make_client()
    assert (await post(client, "firing_group_servicedown_3_hosts")).status_code == 200
    await wait_for(lambda: settled(service))
    assert len(await decisions(client)) == 3
    assert parsed == [fixture_body("firing_group_servicedown_3_hosts")]


async def test_store_that_cannot_commit_answers_503_and_loses_nothing(
    backend: str, make_client: ClientFactory, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the write lock below is SQLite's")
    client, service = await make_client(store_timeout_seconds=0.2)
    assert (await post(client, "firing_single_servicedown")).status_code == 200
    await wait_for(lambda: settled(service))
    [first] = await decisions(client)
    first_incident = first["incident"]
    await service.stop()  # keep the engine loop from holding the lock we are about to take
    locker = sqlite3.connect(tmp_path / "data" / "responder.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        response = await post(client, "firing_group_servicedown_3_hosts")
        assert response.status_code == 503
        assert "retry" in response.json()["error"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    client2, service2 = await make_client()
    assert (await post(client2, "firing_group_servicedown_3_hosts")).status_code == 200
    await wait_for(lambda: settled(service2))
    # What was acknowledged before the failure is still there; the retry is recorded once.
    recorded = await decisions(client2)
    assert len(recorded) == 4
    assert recorded[0]["incident"] == first_incident
    assert {d["inbox_id"] for d in recorded} == {1, 2}


async def test_health_readiness_and_metrics(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    await wait_for(lambda: _ready(client))
    await post(client, "firing_single_servicedown")
    await client.post(URL, content=b"{", headers=JSON)
    text = (await client.get("/metrics")).text
    assert 'responder_webhooks_total{code="200"}' in text
    assert 'responder_webhooks_total{code="400"}' in text
    assert "responder_dispatch_seconds_bucket" in text
    from responder.control.guard import REFUSALS

    for code in REFUSALS:  # every refusal reason is exported, even before it happens
        assert f'responder_decisions_total{{refusal="{code}",verdict="refused"}}' in text


async def _ready(client: httpx.AsyncClient) -> bool:
    response = await client.get("/readyz")
    return response.status_code == 200 and response.json()["checks"]["engine"] is True


async def test_pause_status_and_resume(make_client: ClientFactory) -> None:
    client, service = await make_client(bearer_token="t")
    auth = {"authorization": "Bearer t"}
    assert (await client.post("/api/v1/pause", json={"reason": "x"})).status_code == 401
    bad = await client.post("/api/v1/pause", json={"reason": ""}, headers=auth)
    assert bad.status_code == 422
    paused = await client.post(
        "/api/v1/pause", json={"reason": "change freeze", "by": "oncall"}, headers=auth
    )
    assert paused.status_code == 200
    await post(client, "firing_single_servicedown", **auth)
    await wait_for(lambda: settled(service))
    status = (await client.get("/api/v1/status", headers=auth)).json()
    assert status["pause"]["reason"] == "change freeze"
    assert status["leases"] == []
    assert status["incidents"]["counts"]["waiting"] == 1
    [waiting] = status["incidents"]["waiting"]
    assert (waiting["waiting_on"], waiting["rule"]) == ("paused", "restart-crashed-service")
    assert (await client.post("/api/v1/resume", headers=auth)).status_code == 200

    async def resumed() -> list[dict[str, Any]]:
        rows = await decisions(client, headers=auth)
        return [d for d in rows if d["reason"].startswith("re-examined: remediation resumed")]

    # The incident refused while paused is decided again at once (this replica leads).
    [again] = await wait_for(resumed)
    assert (again["verdict"], again["refusal"]) == ("admitted", None)
    assert again["labels"]["instance"] == "host-1"
    await post(client, "firing_group_servicedown_3_hosts", **auth)
    await wait_for(lambda: settled(service))
    rows = await decisions(client, headers=auth)
    assert [(d["verdict"], d["refusal"]) for d in rows][:2] == [
        ("refused", "paused"),
        ("admitted", None),
    ]
    status = (await client.get("/api/v1/status", headers=auth)).json()
    assert status["pause"] is None
    assert {lease["name"] for lease in status["leases"]} == {
        f"{kind}host-{i}{suffix}"
        for i in (1, 2, 3)
        for kind, suffix in (
            ("key:restart-crashed-service:restart-service/", "/checkout"),
            ("mutex:host:", ""),
        )
    }
    text = (await client.get("/metrics")).text
    assert 'responder_decisions_total{refusal="paused",verdict="refused"}' in text
    # The group's incident of host-1 waits for the resumed incident's run, which holds the key.
    [waiting] = status["incidents"]["waiting"]
    assert (waiting["waiting_on"], waiting["holder"]) == ("key_active", again["id"])
    assert 'responder_incidents{state="running"} 3.0' in (await client.get("/metrics")).text


EXTRA_RULE = """
rules:
  - name: disk-full
    match: ['alertname="DiskAlmostFull"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "disk/{{ alert.labels.instance }}"}
"""


async def test_reload_keeps_the_old_rules_when_the_new_ones_are_bad(
    make_client: ClientFactory, rules_dir: Path
) -> None:
    client, service = await make_client()
    (rules_dir / "disk.yaml").write_text(EXTRA_RULE)
    response = await client.post("/-/reload")
    assert response.status_code == 200
    assert response.json()["rules"] == 2
    (rules_dir / "disk.yaml").write_text(EXTRA_RULE.replace("match:", "mtach:"))
    response = await client.post("/-/reload")
    assert response.status_code == 400
    body = response.json()
    assert body["file"] == str(rules_dir / "disk.yaml")
    assert body["line"] == 4
    assert "mtach" in body["error"]
    assert "responder_rule_reload_success 0.0" in (await client.get("/metrics")).text
    # The rules loaded before the bad edit still decide.
    await post(client, "firing_group_diskalmostfull_2_hosts")
    await wait_for(lambda: settled(service))
    assert [d["rule"] for d in await decisions(client)] == ["disk-full", "disk-full"]


async def test_reload_refuses_what_responder_check_calls_errors(
    make_client: ClientFactory, rules_dir: Path
) -> None:
    client, service = await make_client(check=refuse_errors)
    (rules_dir / "disk.yaml").write_text(EXTRA_RULE)
    assert (await client.post("/-/reload")).json()["rules"] == 2
    # Both load (the YAML and the keys are right); `responder check` finds two errors.
    bad = EXTRA_RULE.replace('{{ alert.labels.instance }}"}}', '{{ vars.pagerurl }}", tmeout: 3}}')
    (rules_dir / "disk.yaml").write_text(bad)
    load_rules([rules_dir])
    response = await client.post("/-/reload")
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["file"], body["line"]) == (str(rules_dir / "disk.yaml"), 5)
    assert [(e["line"], e["message"].split(":")[0]) for e in body["errors"]] == [
        (5, "rule 'disk-full'"),
        (5, "rule 'disk-full'"),
    ]
    messages = " ".join(e["message"] for e in body["errors"])
    assert "vars.pagerurl" in messages and "tmeout" in messages, messages
    assert "(and 1 more error(s))" in body["error"]
    assert len(service.book.rules) == 2
    assert [r.run.parameters["url"] for r in service.book.rules if r.name == "disk-full"] == [
        "http://127.0.0.1:9/{{ alert.labels.instance }}"
    ]


async def test_a_start_logs_what_responder_check_calls_errors_and_runs_the_rules(
    make_client: ClientFactory, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = EXTRA_RULE.replace('{{ alert.labels.instance }}"}}', '{{ vars.pagerurl }}"}}')
    (rules_dir / "disk.yaml").write_text(bad)
    _, service = await make_client(check=refuse_errors)
    assert len(service.book.rules) == 2

    async def logged() -> bool:  # the start's check runs in the background
        return "responder check finds 1 error(s)" in caplog.text

    await wait_for(logged)
    assert f"{rules_dir / 'disk.yaml'}:5: rule 'disk-full'" in caplog.text


NOTIFY_RULE = """\
rules:
  - name: notify-disk
    match: ['alertname="DiskAlmostFull"']
    run: {flow: notify-ops, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "notify/{{ alert.labels.instance }}"}
"""


async def test_a_broken_flow_file_fails_the_reload_and_the_old_flows_and_rules_stay(
    make_client: ClientFactory, rules_dir: Path, tmp_path: Path
) -> None:
    more = tmp_path / "more-flows"
    more.mkdir()
    (more / "notify.yaml").write_text(NOTIFY_FLOW)
    client, service = await make_client(check=refuse_errors, flows_dir=[more])
    try:
        (rules_dir / "notify.yaml").write_text(NOTIFY_RULE)
        assert (await client.post("/-/reload")).json()["rules"] == 2
        (more / "notify.yaml").write_text(NOTIFY_FLOW.replace("{type: url}", "{type: uri}"))
        response = await client.post("/-/reload")
        assert response.status_code == 400, response.text
        body = response.json()
        assert (body["file"], body["line"]) == (str(more / "notify.yaml"), 5), body
        assert "parameters.url.type" in body["error"]
        # The rules and the flow in force still decide: the alert runs notify-ops.
        await post(client, "firing_group_diskalmostfull_2_hosts")
        await wait_for(lambda: settled(service))
        found = {(d["rule"], d["verdict"]) for d in await decisions(client)}
        assert found == {("notify-disk", "admitted")}, await decisions(client)
    finally:
        use_flow_dirs([])


async def test_a_changed_rule_file_is_reloaded_by_itself(
    make_client: ClientFactory, rules_dir: Path
) -> None:
    client, service = await make_client(reload_check_seconds=0.05)
    assert len(service.book.rules) == 1
    (rules_dir / "disk.yaml").write_text(EXTRA_RULE)

    async def reloaded() -> bool:
        return len(service.book.rules) == 2

    await wait_for(reloaded, timeout=10)
    await post(client, "firing_group_diskalmostfull_2_hosts")
    await wait_for(lambda: settled(service))
    assert {d["verdict"] for d in await decisions(client)} == {"admitted"}


DEPLOY = {
    "specversion": "1.0",
    "id": "d-1",
    "source": "argo",
    "type": "deploy.finished",
    "data": {"workload": "api", "previous_revision": "41"},
}


async def test_cloudevents_single_and_batch_become_facts(make_client: ClientFactory) -> None:
    client, service = await make_client()
    single = await client.post(
        "/api/v1/events", json=DEPLOY, headers={"content-type": "application/cloudevents+json"}
    )
    assert single.status_code == 200
    assert single.json()["events"] == 1
    batch = [{**DEPLOY, "id": f"d-{i}", "data": {"workload": f"w{i}"}} for i in range(3)]
    response = await client.post(
        "/api/v1/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.json()["events"] == 3
    await wait_for(lambda: settled(service))
    workloads = sorted(
        f.fields["workload"] for f in service.loop.engine.facts() if f.name == "event"
    )
    assert workloads == ["api", "w0", "w1", "w2"]


async def test_cloudevents_errors(make_client: ClientFactory) -> None:
    client, _ = await make_client()
    ce = {"content-type": "application/cloudevents+json"}
    assert (await client.post("/api/v1/events", content=b"{", headers=ce)).status_code == 400
    text = await client.post("/api/v1/events", content=b"{}", headers={"content-type": "text/x"})
    assert text.status_code == 415
    bad = {**DEPLOY, "specversion": "0.3"}
    del bad["id"]
    response = await client.post("/api/v1/events", json=bad, headers=ce)
    assert response.status_code == 422
    assert {f["field"] for f in response.json()["fields"]} == {"specversion", "id"}


async def test_a_decision_id_past_the_stores_range_is_422(make_client: ClientFactory) -> None:
    # Found by tests/test_fuzz.py: before_id=2**63 reached SQLite and answered 500.
    client, _ = await make_client()
    response = await client.get("/api/v1/decisions", params={"before_id": 2**63})
    assert response.status_code == 422


async def test_explain_tells_an_alerts_story(make_client: ClientFactory) -> None:
    client, service = await make_client()
    await post(client, "firing_single_servicedown")
    await post(client, "firing_single_servicedown")
    await wait_for(lambda: settled(service))
    story = (await client.get("/api/v1/explain/4c49c27c50dac262")).json()
    assert [d["verdict"] for d in story["decisions"]] == ["admitted", "duplicate"]
    [held] = story["held"]
    [rule] = held["rules"]
    assert rule == {"rule": "restart-crashed-service", "holds": True, "failure": None}
    [incident] = story["incidents"]
    assert (incident["incident"], incident["state"]) == (held["incident"], "running")
    assert (await client.get("/api/v1/explain/abcdef")).status_code == 404
    assert (await client.get("/api/v1/explain/not-hex")).status_code == 422


async def test_explain_shows_when_the_ladder_tries_again(make_client: ClientFactory) -> None:
    client, service = await make_client()
    await post(client, "firing_single_servicedown")
    await wait_for(lambda: settled(service))
    [decision] = await decisions(client)
    # The restart completed and the alert still fires: a second attempt after the cooldown.
    assert await leases.finish(service.store, decision["id"], "COMPLETED")
    await wait_for(lambda: settled(service))
    story = (await client.get("/api/v1/explain/4c49c27c50dac262")).json()
    [incident] = story["incidents"]
    assert (incident["state"], incident["outcome"]) == ("done", "COMPLETED")
    attempt = incident["next_attempt"]
    assert attempt["rule"] == "restart-crashed-service"
    assert attempt["at"] == pytest.approx(decision["created_at"] + 15 * 60 + 1, abs=30)
    words = incident_state(incident)
    assert words.startswith("done (COMPLETED); next attempt of restart-crashed-service at ")


async def test_the_engine_loop_outlives_a_store_that_cannot_commit(
    backend: str, make_client: ClientFactory, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the write lock below is SQLite's")
    client, service = await make_client(store_timeout_seconds=0.2)
    locker = sqlite3.connect(tmp_path / "data" / "responder.db", isolation_level=None)
    await service.loop._lock.acquire()  # hold the loop back until the database is locked
    await post(client, "firing_single_servicedown")  # committed before the lock
    locker.execute("BEGIN IMMEDIATE")
    service.loop._lock.release()
    try:
        await asyncio.sleep(1.0)  # the loop's batches fail to commit meanwhile
        assert await service.store.leases.count() == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await wait_for(lambda: settled(service), timeout=30)
    [decision] = await decisions(client)
    assert decision["verdict"] == "admitted"
    assert service.engine_alive


async def test_webhook_operator_and_event_credentials_are_separate(
    make_client: ClientFactory,
) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op", events_token="ev")

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    assert (await post(client, "firing_single_servicedown", **bearer("op"))).status_code == 401
    assert (await post(client, "firing_single_servicedown", **bearer("wh"))).status_code == 200
    assert (await client.get("/api/v1/decisions", headers=bearer("wh"))).status_code == 401
    assert (await client.get("/api/v1/decisions", headers=bearer("op"))).status_code == 200
    pause = await client.post("/api/v1/pause", json={"reason": "x"}, headers=bearer("wh"))
    assert pause.status_code == 401
    ce = {"content-type": "application/cloudevents+json"}
    wrong = await client.post("/api/v1/events", json=DEPLOY, headers={**ce, **bearer("wh")})
    assert wrong.status_code == 401
    right = await client.post("/api/v1/events", json=DEPLOY, headers={**ce, **bearer("ev")})
    assert right.status_code == 200


async def test_bad_parameters_without_credentials_are_401_and_with_them_422(
    make_client: ClientFactory,
) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op")
    operator = {"authorization": "Bearer op"}
    bad = [
        ("GET", "/api/v1/decisions?limit=0"),
        ("GET", "/api/v1/explain/not-hex"),
        ("GET", "/api/v1/catalog/Bad%20Name"),
        ("POST", "/api/v1/catalog/flows/Bad%20Name/runs"),
    ]
    for method, path in bad:
        anonymous = await client.request(method, path, headers=JSON, content=b"{}")
        assert anonymous.status_code == 401, f"{method} {path}: {anonymous.text}"
        assert "www-authenticate" in anonymous.headers
        known = await client.request(method, path, headers={**JSON, **operator}, content=b"{}")
        assert known.status_code == 422, f"{method} {path}: {known.text}"
        assert known.json()["error"] == "invalid request parameters"
        [field] = known.json()["fields"]
        assert field["field"].split(".")[0] in ("query", "path"), field
    limit = await client.get("/api/v1/decisions?limit=0", headers=operator)
    assert limit.json()["fields"][0]["field"] == "query.limit"
    # The OpenAPI document describes that body, not FastAPI's default one.
    document = (await client.get("/api/v1/openapi.json", headers=operator)).json()
    described = document["components"]["schemas"]["HTTPValidationError"]
    assert set(described["properties"]) == {"error", "fields"}


async def test_every_endpoint_but_health_and_metrics_needs_credentials(
    make_client: ClientFactory,
) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op", events_token="ev")
    app = client._transport.app  # type: ignore[attr-defined]
    open_paths = {"/healthz", "/readyz", "/metrics"}
    values = {"fingerprint": "abc123", "name": "restart-service", "flow_run_id": FLOW_RUN}
    values["mapping"] = "grafana"  # a JSON webhook of the shipped mappings
    checked = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in open_paths:
            continue
        path = route.path.format(**values)
        for method in sorted(route.methods):
            response = await client.request(method, path, headers=JSON, content=b"{}")
            assert response.status_code == 401, f"{method} {path}: {response.status_code}"
            checked.append(f"{method} {route.path}")
    assert len(checked) >= 12, checked
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await client.get(path)).status_code == 404
    openapi = await client.get("/api/v1/openapi.json", headers={"authorization": "Bearer op"})
    assert openapi.status_code == 200 and "/webhook/alertmanager" in openapi.json()["paths"]
    for path in open_paths:
        assert (await client.get(path)).status_code in (200, 503)


# Every secret, and the header that presents it.
SECRETS: dict[str, tuple[dict[str, str], str]] = {
    "bearer": ({"bearer_token": "wh"}, "Bearer wh"),
    "basic": (
        {"basic_username": "am", "basic_password": "pw"},
        "Basic " + base64.b64encode(b"am:pw").decode(),
    ),
    "operator": ({"operator_token": "op"}, "Bearer op"),
    "events": ({"events_token": "ev"}, "Bearer ev"),
}
SUBSETS = [
    subset for size in range(len(SECRETS) + 1) for subset in itertools.combinations(SECRETS, size)
]


def accepted_secrets(path: str, configured: set[str]) -> set[str]:
    """What this route must accept, by its kind: the webhook's credentials; the operator
    API's or the events' token, or the webhook's when that token is not set."""
    webhook = configured & {"bearer", "basic"}
    if path == URL:
        return webhook
    # The events' kind: CloudEvents and the JSON webhooks (a mapping without a signature).
    events = path in ("/api/v1/events", "/webhook/json/{mapping}")
    own = "events" if events else "operator"  # every other route
    return {own} if own in configured else webhook


@pytest.mark.parametrize("backend", ["sqlite"])  # credentials do not depend on the store
@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s) or "none")
async def test_every_route_takes_exactly_its_credentials_for_every_subset_of_secrets(
    make_client: ClientFactory, tmp_path: Path, subset: tuple[str, ...], host: str
) -> None:
    configured = set(subset)
    settings = {k: v for name in subset for k, v in SECRETS[name][0].items()}
    beyond_loopback = host != "127.0.0.1"
    if beyond_loopback and not configured & {"bearer", "basic"}:
        # An open webhook, and with it any kind without a token of its own: refused at start.
        with pytest.raises(
            ConfigError, match=r"field host value '0\.0\.0\.0'.*would accept anyone"
        ):
            load_settings(tmp_path / "absent.yaml", host=host, **settings)
        return
    client, _ = await make_client(host=host, **settings)
    app = client._transport.app  # type: ignore[attr-defined]
    values = {"fingerprint": "abc123", "name": "restart-service", "flow_run_id": FLOW_RUN}
    values["mapping"] = "grafana"  # a JSON webhook of the shipped mappings
    walked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in {"/healthz", "/readyz", "/metrics"}:
            continue
        path = route.path.format(**values)
        accepted = accepted_secrets(route.path, configured)
        for method, presented in itertools.product(sorted(route.methods), [None, *SECRETS]):
            headers = dict(JSON)
            if presented is not None:
                headers["authorization"] = SECRETS[presented][1]
            response = await client.request(method, path, headers=headers, content=b"{}")
            # A route whose kind has no credentials is open: only on loopback.
            admitted = presented in accepted or not accepted
            assert not (beyond_loopback and not accepted), route.path
            what = f"{method} {path} with {presented or 'nothing'}: {response.status_code}"
            assert (response.status_code != 401) == admitted, what
            if not admitted:
                assert "www-authenticate" in response.headers
            walked += 1
    assert walked >= 12 * 5, walked


def many_rules(count: int) -> str:
    lines = ["rules:"]
    for i in range(count):
        lines += [
            f"  - name: bulk-{i}",
            f"    match: ['alertname=\"Bulk{i % 100}\"', 'job=\"j{i}\"']",
            "    run: {flow: http-call, parameters: {url: 'http://127.0.0.1:9/x'}}",
            f'    guard: {{key: "bulk-{i}/{{{{ alert.labels.instance }}}}"}}',
        ]
    return "\n".join(lines) + "\n"


async def slowest_answer_during(client: httpx.AsyncClient, work: Any) -> float:
    """Ask /healthz every 20 ms while `work` runs; the longest wait for an answer, in seconds
    (a blocked event loop delays the next question as much as the answer)."""
    clock = asyncio.get_running_loop().time
    slowest = 0.0
    task = asyncio.ensure_future(work)
    answered = clock()
    while not task.done():
        await asyncio.sleep(0.02)
        assert (await client.get("/healthz")).status_code == 200
        slowest = max(slowest, clock() - answered - 0.02)
        answered = clock()
    await task
    return slowest


async def test_health_answers_while_a_big_rule_set_is_reloaded(
    make_client: ClientFactory, rules_dir: Path
) -> None:
    client, service = await make_client()
    # 3,000 rules take seconds to parse and compile (10,000 took 20 s in the field).
    (rules_dir / "bulk.yaml").write_text(many_rules(3_000))
    slowest = await slowest_answer_during(client, client.post("/-/reload"))
    assert len(service.book.rules) == 3_001
    assert slowest < 1.0, f"/healthz took {slowest:.1f}s during the reload"


async def test_a_reload_refuses_an_alias_bomb_at_once(
    make_client: ClientFactory, rules_dir: Path
) -> None:
    client, _ = await make_client()
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    (rules_dir / "bomb.yaml").write_text("\n".join(levels) + "\nrules: []\n")
    response = await asyncio.wait_for(client.post("/-/reload"), timeout=20)
    assert response.status_code == 400
    body = response.json()
    assert (body["file"], body["line"]) == (str(rules_dir / "bomb.yaml"), 7)
    assert "expand the document beyond" in body["error"]


async def ready(client: httpx.AsyncClient) -> bool:
    """/readyz says ready (the flows' parameter checks load in the background at start)."""
    return (await client.get("/readyz")).status_code == 200


async def test_readyz_fails_naming_the_file_once_the_store_is_found_damaged(
    make_client: ClientFactory, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("a damaged file is SQLite's")
    client, service = await make_client()
    assert (await post(client, "firing_single_servicedown")).status_code == 200
    await wait_for(lambda: settled(service))

    await wait_for(lambda: ready(client))
    # Pooled connections cache pages; new ones read the damaged file, as after a restart.
    await service.store.engine.dispose()
    database = service.settings.data_dir / "responder.db"
    damage_tables(database, ["inbox", "decisions"])
    await post(client, "firing_group_diskalmostfull_2_hosts")  # 200 or 503: both are honest

    async def not_ready() -> bool:
        return (await client.get("/readyz")).status_code == 503

    await wait_for(not_ready, timeout=20)
    body = (await client.get("/readyz")).json()
    assert body["checks"]["store"] is False
    assert f"store {database} is damaged" in body["store_problem"]
    # A connection the test's dispose() detached from the pool cannot be closed from the
    # garbage collector (aiosqlite needs the event loop): collect it here, not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs), for a disk that fills up; needs root to mount."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_up(disk: Path) -> Path:
    """Write a file until the disk has no block left; returns it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


async def test_readyz_is_not_ready_while_a_full_disk_makes_intake_answer_503(
    small_disk: Path, make_client: ClientFactory, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the disk under a SQLite file")
    client, service = await make_client(data_dir=small_disk / "data")
    assert (await post(client, "firing_single_servicedown")).status_code == 200
    await wait_for(lambda: settled(service))
    await wait_for(lambda: ready(client))
    filler = fill_up(small_disk)

    assert (await post(client, "firing_group_diskalmostfull_2_hosts")).status_code == 503
    readyz = await client.get("/readyz")
    assert readyz.status_code == 503, readyz.text
    assert "the store cannot commit" in readyz.json()["store_problem"]

    filler.unlink()
    readyz = await client.get("/readyz")
    assert readyz.status_code == 200, readyz.text
    assert (await post(client, "firing_group_diskalmostfull_2_hosts")).status_code == 200


# One named operator of each role; an admin's token is also the shared operator_token's role.
OPERATORS = [
    {"name": f"{role}-1", "token": f"tok-{role}", "role": role}
    for role in ("viewer", "operator", "approver", "admin")
]
# What each operator route does, as docs/operations.md lists it: every GET reads.
CHANGES = {
    ("POST", "/api/v1/catalog/flows/{name}/runs"): "operate",
    ("POST", "/api/v1/pause"): "operate",
    ("POST", "/api/v1/resume"): "operate",
    ("POST", "/-/reload"): "operate",
    ("POST", "/api/v1/approvals/{flow_run_id}/approve"): "approve",
    ("POST", "/api/v1/approvals/{flow_run_id}/reject"): "approve",
    ("POST", "/api/v1/fencing"): "read",  # a flow run's question: it changes nothing
    ("POST", "/api/v1/maintenance"): "operate",
    ("DELETE", "/api/v1/maintenance/{name}"): "operate",
}
MAY = {
    "viewer": {"read"},
    "operator": {"read", "operate"},
    "approver": {"read", "approve"},
    "admin": {"read", "operate", "approve"},
}


@pytest.mark.parametrize("backend", ["sqlite"])  # roles do not depend on the store
async def test_every_operator_route_takes_exactly_the_roles_that_may_use_it(
    make_client: ClientFactory,
) -> None:
    client, _ = await make_client(bearer_token="wh", events_token="ev", operators=OPERATORS)
    app = client._transport.app  # type: ignore[attr-defined]
    values = {
        "fingerprint": "abc123",
        "name": "restart-service",
        "flow_run_id": FLOW_RUN,
    }
    bodies: dict[str, Any] = {
        "/api/v1/pause": {"reason": "walk"},
        "/api/v1/approvals/{flow_run_id}/reject": {"reason": "walk"},
        "/api/v1/fencing": {"decision_id": 1, "flow_run_id": FLOW_RUN},
    }
    walked: dict[str, set[str]] = {role: set() for role in MAY}
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in {
            "/healthz",
            "/readyz",
            "/metrics",
            URL,
            "/api/v1/events",
            "/webhook/json/{mapping}",
        }:
            continue
        for method, operator in itertools.product(sorted(route.methods), OPERATORS):
            action = CHANGES.get((method, route.path), "read" if method == "GET" else "?")
            role = operator["role"]
            body = bodies.get(route.path, {})
            if route.path.endswith("/runs"):
                # A host per role: a manual run takes the rule's key, which names the host.
                body = {"parameters": {"host": f"{role}-host", "service": "s"}, "reason": "walk"}
                body["key"] = f"walk/{role}"
                body["parameters"] |= {"restart_url": "http://127.0.0.1:9/r"}
                body["parameters"] |= {"health_url": "http://127.0.0.1:9/h"}
            if route.path == "/api/v1/maintenance":  # a window per role: names are unique
                body = {"name": f"walk-{role}", "reason": "walk", "end": "2099-01-01T00:00:00Z"}
                body["hosts"] = [f"{role}-host"]
            response = await client.request(
                method,
                route.path.format(**values),
                json=body,
                headers={"authorization": f"Bearer {operator['token']}"},
            )
            what = f"{method} {route.path} as {role}: {response.status_code} {response.text}"
            if action in MAY[role]:
                # A real answer: 200/201/202, or 404 for the unknown alert or waiting run.
                assert response.status_code in (200, 201, 202, 404), what
                if response.status_code == 404:
                    assert "{" in route.path, what
                walked[role].add(f"{method} {route.path}")
            else:
                assert response.status_code == 403, what
                answer = response.json()
                assert answer["role"] == role, what
                assert answer["needed"] == [r for r in MAY if action in MAY[r]], what
                assert " or ".join(answer["needed"]) in answer["error"], what
    assert len(walked["admin"]) >= 13, walked["admin"]
    reads = {r for r in walked["admin"] if r.startswith("GET ") or r.endswith("/fencing")}
    assert walked["viewer"] == reads


async def test_changes_are_recorded_under_the_operators_name_not_the_one_sent(
    make_client: ClientFactory,
) -> None:
    client, _ = await make_client(bearer_token="wh", operators=OPERATORS)
    operator = {"authorization": "Bearer tok-operator"}
    paused = await client.post(
        "/api/v1/pause", json={"reason": "freeze", "by": "mallory"}, headers=operator
    )
    assert paused.status_code == 200, paused.text
    status = (await client.get("/api/v1/status", headers=operator)).json()
    assert status["pause"]["by"] == "operator-1"
    assert status["pause"]["declared_by"] == "mallory"
    # The shared operator_token stays an admin, recorded as such.
    shared, _ = await make_client(bearer_token="wh", operator_token="op")
    await shared.post("/api/v1/pause", json={"reason": "x"}, headers={"authorization": "Bearer op"})
    status = (await shared.get("/api/v1/status", headers={"authorization": "Bearer op"})).json()
    assert status["pause"]["by"] == "operator_token"
    assert "declared_by" not in status["pause"]
    # With named operators, the webhook's credentials are no operator's.
    refused = await client.get("/api/v1/status", headers={"authorization": "Bearer wh"})
    assert refused.status_code == 401


async def test_a_manual_run_with_approval_waits_for_a_second_person(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client(bearer_token="wh", operators=OPERATORS)
    admin, approver = ({"authorization": f"Bearer tok-{role}"} for role in ("admin", "approver"))
    body = {
        "parameters": {
            "host": "h",
            "service": "s",
            "restart_url": "http://127.0.0.1:9/r",
            "health_url": "http://127.0.0.1:9/h",
        },
        "reason": "OPS-9",
        "approval": True,
    }
    response = await client.post(
        "/api/v1/catalog/flows/restart-service/runs", json=body, headers=admin
    )
    assert response.status_code == 202, response.text
    decision = response.json()["decision"]
    assert decision["labels"]["requested_by"] == "admin-1"
    # No Prefect here: give the decision a run that waits, as the dispatcher would.
    await service.store.decisions.set_flow_run(decision["id"], FLOW_RUN)
    assert await service.store.approvals.set(FLOW_RUN, "awaiting", (None,))
    [waiting] = (await client.get("/api/v1/approvals", headers=approver)).json()["approvals"]
    assert (waiting["flow_run_id"], waiting["rule"]) == (FLOW_RUN, "manual")
    assert waiting["alert"]["labels"]["requested_by"] == "admin-1"
    own = await client.post(f"/api/v1/approvals/{FLOW_RUN}/approve", headers=admin)
    assert own.status_code == 409, own.text
    assert own.json()["error"] == "admin-1 asked for this run: another person must answer"
    # Another person may; without a Prefect server to resume, 503, and the run still waits.
    other = await client.post(f"/api/v1/approvals/{FLOW_RUN}/approve", headers=approver)
    assert other.status_code == 503, other.text
    assert len((await client.get("/api/v1/approvals", headers=approver)).json()["approvals"]) == 1
