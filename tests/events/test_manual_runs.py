"""The catalog API and flows started by hand, through the guard, on SQLite and PostgreSQL.

No Prefect server here: admitted runs are recorded, not dispatched
(tests/orchestration/test_dispatch.py does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from responder.control import leases
from responder.control.runs import active_runs
from tests.helpers import fixture_body, wait_for
from tests.intake.test_app import JSON, URL, ClientFactory, backend, make_client, settled

__all__ = ["backend", "make_client"]

OPERATOR = {"authorization": "Bearer op"}
WEBHOOK = {"authorization": "Bearer wh"}
RESTART = {
    "host": "host-1",
    "service": "api",
    "restart_url": "http://127.0.0.1:9/restart/host-1/api",
    "health_url": "http://127.0.0.1:9/health/host-1/api",
}


async def start(
    client: httpx.AsyncClient, flow: str, body: dict[str, Any], headers: dict[str, str] = OPERATOR
) -> httpx.Response:
    return await client.post(f"/api/v1/catalog/flows/{flow}/runs", json=body, headers=headers)


def request(**overrides: Any) -> dict[str, Any]:
    return {"parameters": RESTART, "reason": "OPS-1 restart by hand", "requested_by": "alice"} | (
        overrides
    )


async def test_the_catalog_lists_operations_and_flows(make_client: ClientFactory) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op")
    assert (
        await client.get("/api/v1/catalog", headers={"authorization": "Bearer wh"})
    ).status_code == 401
    listed = (await client.get("/api/v1/catalog", headers=OPERATOR)).json()["catalog"]
    by_name = {entry["name"]: entry for entry in listed}
    assert by_name["http.request"]["kind"] == "operation"
    assert by_name["approval"]["kind"] == "operation"
    assert by_name["restart-service"]["kind"] == "flow"
    assert by_name["clean-disk"]["source"] == "flows/clean-disk.yaml"
    assert all(entry["description"] and entry["risk"] for entry in listed)
    detail = (await client.get("/api/v1/catalog/clean-disk", headers=OPERATOR)).json()
    assert set(detail["parameters"]["required"]) == {"host", "agent_url", "prometheus_url"}
    missing = await client.get("/api/v1/catalog/no-such-thing", headers=OPERATOR)
    assert missing.status_code == 404
    assert missing.json()["name"] == "no-such-thing"


async def test_a_manual_run_goes_through_the_guard_and_is_recorded(
    make_client: ClientFactory,
) -> None:
    alice = {"name": "alice", "token": "op", "role": "operator"}
    client, _ = await make_client(bearer_token="wh", operators=[alice])
    first = await start(client, "restart-service", request(requested_by=""))
    assert first.status_code == 202, first.text
    decision = first.json()["decision"]
    assert decision["verdict"] == "admitted"
    assert decision["rule"] == "manual"
    assert decision["flow"] == "restart-service"
    assert decision["labels"]["requested_by"] == "alice"
    assert decision["parameters"] == RESTART
    again = await start(client, "restart-service", request(requested_by="bob"))
    assert again.status_code == 409
    assert again.json()["decision"]["refusal"] == "key_active"
    other_host = request(parameters={**RESTART, "host": "host-2"})
    assert (await start(client, "restart-service", other_host)).status_code == 202


async def test_a_shared_mutex_refuses_a_second_manual_run(make_client: ClientFactory) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op")
    body = request(mutex=["host:host-1"])
    assert (await start(client, "restart-service", body)).status_code == 202
    other = request(parameters={**RESTART, "service": "db"}, mutex=["host:host-1"])
    refused = await start(client, "restart-service", other)
    assert refused.status_code == 409
    assert refused.json()["decision"]["refusal"] == "mutex_held"


async def test_a_manual_run_is_refused_while_paused(make_client: ClientFactory) -> None:
    client, _ = await make_client(bearer_token="wh", operator_token="op")
    paused = await client.post("/api/v1/pause", json={"reason": "incident"}, headers=OPERATOR)
    assert paused.status_code == 200
    response = await start(client, "restart-service", request())
    assert response.status_code == 409
    assert response.json()["decision"]["refusal"] == "paused"


async def test_bad_run_requests_are_refused_before_anything_is_recorded(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client(bearer_token="wh", operator_token="op")
    webhook_token = await start(
        client, "restart-service", request(), {"authorization": "Bearer wh"}
    )
    assert webhook_token.status_code == 401
    unknown = await start(client, "rm-rf", request())
    assert unknown.status_code == 404
    assert "restart-service" in unknown.json()["known"]
    hostile = request(parameters={**RESTART, "host": "host-1; rm -rf /"})
    bad_host = await start(client, "restart-service", hostile)
    assert bad_host.status_code == 422
    assert [f["field"] for f in bad_host.json()["fields"]] == ["host"]
    extra = await start(client, "restart-service", request(parameters={**RESTART, "sudo": True}))
    assert extra.status_code == 422
    assert extra.json()["fields"][0]["field"] == "sudo"
    no_reason = request()
    del no_reason["reason"]
    missing = await start(client, "restart-service", no_reason)
    assert missing.status_code == 422
    assert missing.json()["fields"][0]["field"] == "reason"
    assert await service.store.decisions.recent() == []
    assert await service.store.inbox.pending(100) == []


async def test_a_manual_run_takes_the_policy_of_the_rules_that_run_its_flow(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    (tmp_path / "services.yaml").write_text(
        "services: {search: {tier: 2, approval: true}}\n"
        "maintenance:\n"
        "  - {labels: {instance: host-3}, until: 2099-01-01T00:00:00Z, reason: OPS-7 disks}\n"
    )
    client, service = await make_client(bearer_token="wh", operator_token="op")
    # The rule restarted checkout on host-1; the run completed, so its key cools down 15m.
    webhook = await client.post(
        URL, content=fixture_body("firing_single_servicedown"), headers=JSON | WEBHOOK
    )
    assert webhook.status_code == 200, webhook.text
    await wait_for(lambda: settled(service))
    [run] = await active_runs(service.store)
    assert await leases.finish(service.store, run.decision_id, "COMPLETED")

    def restart(host: str, service_name: str = "checkout", **overrides: Any) -> dict[str, Any]:
        parameters = {
            "host": host,
            "service": service_name,
            "restart_url": f"http://127.0.0.1:9/restart/{host}/{service_name}",
            "health_url": f"http://127.0.0.1:9/health/{host}/{service_name}",
        }
        return request(parameters=parameters, **overrides)

    cooling = await start(client, "restart-service", restart("host-1", cooldown=0))
    assert cooling.status_code == 409, cooling.text
    decision = cooling.json()["decision"]
    assert (decision["refusal"], decision["guard_key"]) == (
        "cooldown",
        "restart-crashed-service:restart-service/host-1/checkout",
    )
    # The rule's host lock: a second service on a host being restarted by hand waits.
    assert (await start(client, "restart-service", restart("host-2"))).status_code == 202
    locked = await start(client, "restart-service", restart("host-2", "payments", mutex=[]))
    assert locked.status_code == 409
    assert locked.json()["decision"]["refusal"] == "mutex_held"
    # The rule leaves hosts in maintenance alone, and so does a run by hand.
    maintenance = await start(client, "restart-service", restart("host-3"))
    assert maintenance.status_code == 409
    assert "maintenance" in maintenance.json()["decision"]["reason"]
    # The catalog says search needs a person's approval: so does its restart by hand.
    approved = await start(client, "restart-service", restart("host-4", "search"))
    assert approved.status_code == 202
    assert approved.json()["decision"]["parameters"]["approval_required"] is True


def test_a_manual_run_is_refused_when_a_guarding_rule_cannot_render_its_key(
    tmp_path: Path,
) -> None:
    """A rule guards the flow with a key the request's parameters do not name (`cluster`):
    running it under the request's own key would skip the rule's approval and cooldown."""
    from responder.decision.manual import rule_policy
    from responder.decision.rules import load_rules
    from responder.events.manual_runs import RunRequest
    from responder.runtime.service import known_flows

    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - name: restart-by-cluster\n"
        "    description: needs approval, keyed by cluster\n"
        "    match: ['alertname=\"ServiceDown\"']\n"
        "    run:\n"
        "      flow: restart-service\n"
        "      parameters:\n"
        "        host: '{{ alert.labels.instance }}'\n"
        "        service: '{{ alert.labels.service }}'\n"
        "        restart_url: 'http://127.0.0.1:9/r'\n"
        "        health_url: 'http://127.0.0.1:9/h'\n"
        "    guard:\n"
        "      key: 'restart/{{ alert.labels.cluster }}/{{ alert.labels.instance }}'\n"
        "      approval: true\n"
    )
    book = load_rules([tmp_path / "r.yaml"], known_flows())
    request = RunRequest(
        flow="restart-service",
        parameters={**RESTART, "host": "host-1"},
        reason="by hand",
        requested_by="alice",
    )
    ruled = rule_policy(request, book, None, [], {})
    assert ruled is not None and ruled.blocked is not None
    assert "restart-by-cluster" in ruled.blocked and ruled.approval
