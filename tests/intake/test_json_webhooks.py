"""JSON webhooks through a mapping: Grafana's and GitHub's documented payloads over the real
HTTP app, into the inbox and out as the `event` fact the engine loop holds."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.events.facts import Fact
from responder.runtime.service import Service
from tests.helpers import ROOT, app_client, make_settings, wait_for

WEBHOOKS = ROOT / "tests" / "fixtures" / "webhooks"
TOKEN = "events-secret-token"
GITHUB_SECRET = "github-hook-secret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


# A rule on what the GitHub mapping makes of a failed production deployment (dry run: the
# decision is recorded, no flow runs).
ROLLBACK = """
rules:
  - name: deployment-failed
    event: ['type="github.deployment_status.failure"', 'data.environment="production"']
    run:
      flow: http-call
      parameters: {url: "http://127.0.0.1:9/rollback/{{ event.data.repository }}"}
    guard: {key: "rollback/{{ event.subject }}"}
"""


@pytest.fixture
async def service(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Service]:
    (rules_dir / "deployments.yaml").write_text(ROLLBACK)
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "config" / "mappings", mappings)  # the shipped mappings
    settings = make_settings(
        tmp_path,
        rules_dir,
        events_token=TOKEN,
        mappings_dir=mappings,
        webhook_secrets={"github-deployment": GITHUB_SECRET},
        dry_run=True,
    )
    service = Service(settings)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(service) as client:
        yield client


def event_facts(service: Service) -> list[Fact]:
    return [f for f in service.loop.engine.facts() if f.name == "event"]


async def settled(service: Service) -> list[Fact]:
    """The event facts once the loop has read the whole inbox."""

    async def empty() -> bool:
        return await service.backlog() == 0

    await wait_for(empty, timeout=20)
    return event_facts(service)


def github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "deployment_status",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
        "User-Agent": "GitHub-Hookshot/5c8b2a1",
    }


async def test_grafana_notification_becomes_one_event_however_often_it_is_sent(
    service: Service, client: httpx.AsyncClient
) -> None:
    body = (WEBHOOKS / "grafana-firing.json").read_bytes()
    answers = [
        await client.post("/webhook/json/grafana", content=body, headers=BEARER | json_type())
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].json()["id"] == answers[1].json()["id"]  # a hash of what it says
    assert answers[0].json()["type"] == "grafana.alert.firing"
    facts = await settled(service)
    assert len(facts) == 1, facts
    fields = facts[0].fields
    assert fields["type"] == "grafana.alert.firing"
    assert fields["source"] == "grafana"
    assert fields["subject"] == "BackupTooOld"
    assert fields["instance"] == "db-1.example.internal"
    assert fields["severity"] == "critical"
    assert fields["state"] == "alerting"
    assert "alerts" not in fields  # a list stays in the event's data, not in the fact


def json_type() -> dict[str, str]:
    return {"Content-Type": "application/json"}


async def test_grafana_resolved_is_another_event(
    service: Service, client: httpx.AsyncClient
) -> None:
    firing = json.loads((WEBHOOKS / "grafana-firing.json").read_bytes())
    resolved = {**firing, "status": "resolved"}
    resolved["alerts"] = [{**firing["alerts"][0], "status": "resolved"}]
    for document in (firing, resolved):
        answer = await client.post("/webhook/json/grafana", json=document, headers=BEARER)
        assert answer.status_code == 200, answer.text
    types = sorted(f.fields["type"] for f in await settled(service))
    assert types == ["grafana.alert.firing", "grafana.alert.resolved"]


async def test_github_deployment_status_signed_and_redelivered(
    service: Service, client: httpx.AsyncClient
) -> None:
    body = (WEBHOOKS / "github-deployment-status.json").read_bytes()
    delivery = "5c5c7a00-b26c-11ef-8d6a-3e1b2f6a9c41"
    for _ in range(2):  # GitHub's "Redeliver" sends the same delivery id
        answer = await client.post(
            "/webhook/json/github-deployment", content=body, headers=github_headers(body, delivery)
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == delivery
    facts = await settled(service)
    assert len(facts) == 1
    fields = facts[0].fields
    assert fields["id"] == delivery
    assert fields["type"] == "github.deployment_status.failure"
    assert fields["source"] == "github.com/example-org/shop"
    assert fields["subject"] == "production"
    assert fields["deployment_id"] == "2317480915"
    assert fields["sha"] == "9f3c1b7e2d4a6f8b0c1e3d5f7a9b2c4d6e8f0a1b"
    # The rule decided on it once; the redelivery is recorded as a duplicate.
    ledger = list(reversed(await service.decisions(limit=100)))
    assert [(d["rule"], d["verdict"]) for d in ledger] == [
        ("deployment-failed", "dry_run"),
        (None, "duplicate"),
    ]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Hub-Signature-256": "sha256=" + "0" * 64}, id="wrong"),
        pytest.param({"X-Hub-Signature-256": ""}, id="empty"),
        pytest.param(None, id="missing"),
        pytest.param("other-secret", id="other-secret"),
    ],
)
async def test_github_without_its_signature_is_refused(
    service: Service, client: httpx.AsyncClient, headers: Any
) -> None:
    body = (WEBHOOKS / "github-deployment-status.json").read_bytes()
    sent = github_headers(body, "d1", headers if isinstance(headers, str) else GITHUB_SECRET)
    if headers is None:
        del sent["X-Hub-Signature-256"]
    elif isinstance(headers, dict):
        sent |= headers
    sent |= BEARER  # the events token is no substitute for the signature
    answer = await client.post("/webhook/json/github-deployment", content=body, headers=sent)
    assert answer.status_code == 401
    assert answer.json()["field"] == "X-Hub-Signature-256"
    assert await service.backlog() == 0


async def test_unsigned_mapping_needs_the_events_credentials(
    service: Service, client: httpx.AsyncClient
) -> None:
    body = (WEBHOOKS / "grafana-firing.json").read_bytes()
    answer = await client.post("/webhook/json/grafana", content=body, headers=json_type())
    assert answer.status_code == 401
    # An unknown mapping is told only to a caller with credentials.
    unknown = await client.post("/webhook/json/nope", content=body, headers=json_type())
    assert unknown.status_code == 401
    unknown = await client.post("/webhook/json/nope", content=body, headers=BEARER | json_type())
    assert unknown.status_code == 404
    assert unknown.json()["known"] == ["github-deployment", "grafana"]
    assert await service.backlog() == 0


def without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    part = copy
    for key in path[:-1]:
        part = part[key]
    del part[path[-1]]
    return copy


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        (lambda d: without(d, "deployment_status", "state"), 422, "deployment_status.state"),
        (lambda d: without(d, "deployment", "environment"), 422, "deployment.environment"),
        (lambda d: without(d, "repository"), 422, "repository.full_name"),
        (lambda d: {**d, "deployment": []}, 422, "deployment.environment"),
        (lambda d: [d], 422, "repository.full_name"),
        (
            lambda d: {**d, "deployment_status": {**d["deployment_status"], "created_at": "soon"}},
            422,
            "time",
        ),
    ],
)
async def test_bad_bodies_name_the_path(
    service: Service, client: httpx.AsyncClient, change: Any, status: int, named: str
) -> None:
    document = json.loads((WEBHOOKS / "github-deployment-status.json").read_bytes())
    body = json.dumps(change(document)).encode()
    answer = await client.post(
        "/webhook/json/github-deployment", content=body, headers=github_headers(body, "d2")
    )
    assert answer.status_code == status, answer.text
    assert named in answer.text
    assert await service.backlog() == 0


async def test_not_json_and_missing_delivery_id(
    service: Service, client: httpx.AsyncClient
) -> None:
    body = b'{"deployment_status": '
    answer = await client.post(
        "/webhook/json/github-deployment", content=body, headers=github_headers(body, "d3")
    )
    assert answer.status_code == 400
    body = (WEBHOOKS / "github-deployment-status.json").read_bytes()
    headers = github_headers(body, "d4")
    del headers["X-GitHub-Delivery"]
    answer = await client.post("/webhook/json/github-deployment", content=body, headers=headers)
    assert answer.status_code == 422
    assert answer.json()["missing"] == ["id (header X-GitHub-Delivery)"]
    answer = await client.post(
        "/webhook/json/grafana", content=b"{}", headers=BEARER | {"Content-Type": "text/plain"}
    )
    assert answer.status_code == 415
    assert await service.backlog() == 0


async def test_a_reload_reads_the_mappings_again_and_a_broken_one_keeps_those_in_force(
    service: Service, client: httpx.AsyncClient
) -> None:
    body = (WEBHOOKS / "grafana-firing.json").read_bytes()
    assert (
        await client.post("/webhook/json/grafana-2", content=body, headers=BEARER | json_type())
    ).status_code == 404
    mappings = service.settings.mappings_dir
    shutil.copy(mappings / "grafana.yaml", mappings / "grafana-2.yaml")
    reloaded = await client.post("/-/reload", headers=BEARER)
    assert reloaded.status_code == 200, reloaded.text
    answer = await client.post(
        "/webhook/json/grafana-2", content=body, headers=BEARER | json_type()
    )
    assert answer.status_code == 200, answer.text

    # A mistake on line 2: the reload is refused, naming the file and line; both stay.
    (mappings / "grafana-2.yaml").write_text("source: {value: grafana}\ntype: {bogus: 1}\n")
    refused = await client.post("/-/reload", headers=BEARER)
    assert refused.status_code == 400
    assert refused.json()["file"].endswith("grafana-2.yaml")
    assert refused.json()["line"] == 2
    for name in ("grafana", "grafana-2"):
        again = await client.post(
            f"/webhook/json/{name}", content=body, headers=BEARER | json_type()
        )
        assert again.status_code == 200, again.text


async def test_the_file_watcher_reloads_a_new_mapping(tmp_path: Path, rules_dir: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    settings = make_settings(
        tmp_path, rules_dir, events_token=TOKEN, mappings_dir=mappings, reload_check_seconds=0.1
    )
    service = Service(settings)
    await service.start()
    try:
        async with app_client(service) as client:
            body = (WEBHOOKS / "grafana-firing.json").read_bytes()

            async def served() -> bool:
                answer = await client.post(
                    "/webhook/json/grafana", content=body, headers=BEARER | json_type()
                )
                return answer.status_code == 200

            assert not await served()
            shutil.copy(ROOT / "config" / "mappings" / "grafana.yaml", mappings)
            await wait_for(served, timeout=20)
    finally:
        await service.stop()
