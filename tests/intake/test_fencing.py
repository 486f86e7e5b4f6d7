"""`POST /api/v1/fencing`: what a flow run is told before a step that changes something.

Real stores (SQLite and PostgreSQL) and the real engine behind the app; no Prefect server:
the test records the decision's flow run itself, as the dispatcher does once Prefect made it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update

from responder.control import leases
from responder.runtime.service import Service
from responder.storage.schema import leases as lease_table
from tests.helpers import wait_for
from tests.intake.test_app import ClientFactory, backend, decisions, make_client, post, settled

__all__ = ["backend", "make_client"]  # fixtures

RUN = "0b7e4a9c-58f4-4c8e-9a43-8e1f5d6c2a10"
OTHER_RUN = "6f1d2c3b-0000-4000-8000-000000000002"


async def admitted(client: httpx.AsyncClient, service: Service, run: str | None = RUN) -> int:
    """The shipped restart rule admits the single ServiceDown alert; its run is `run`."""
    await post(client, "firing_single_servicedown")
    await wait_for(lambda: settled(service))
    [decision] = await decisions(client)
    assert decision["verdict"] == "admitted"
    if run is not None:
        await service.store.decisions.set_flow_run(decision["id"], run)
    return int(decision["id"])


async def ask(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/api/v1/fencing", json=body, headers=headers)


async def test_the_run_of_a_decision_that_holds_its_key_may_act(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client()
    decision = await admitted(client, service)
    response = await ask(client, {"decision_id": decision, "flow_run_id": RUN.upper()})
    assert response.status_code == 200, response.text
    assert response.json() == {"act": True, "refusal": None, "message": "", "again": False}


async def test_a_run_not_yet_recorded_is_told_to_ask_again(make_client: ClientFactory) -> None:
    client, service = await make_client()
    decision = await admitted(client, service, run=None)
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": RUN})).json()
    assert (answer["act"], answer["again"], answer["refusal"]) == (False, True, None)


async def test_a_run_responder_did_not_start_may_not_act(make_client: ClientFactory) -> None:
    client, service = await make_client()
    decision = await admitted(client, service)
    # Another run carrying the decision's tag (copied from the Prefect UI, say).
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": OTHER_RUN})).json()
    assert answer["act"] is False
    assert answer["refusal"] == "not started by Responder"
    assert f"runs as flow run {RUN}" in answer["message"]
    assert "responder run" in answer["message"]
    # A decision that does not exist, or was not admitted.
    answer = (await ask(client, {"decision_id": 999, "flow_run_id": RUN})).json()
    assert answer["refusal"] == "not started by Responder"


async def test_a_resolved_alert_stops_the_run_before_it_acts(make_client: ClientFactory) -> None:
    client, service = await make_client()
    decision = await admitted(client, service)
    await post(client, "resolved_single_servicedown")
    await wait_for(lambda: settled(service))
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": RUN})).json()
    assert answer["act"] is False
    assert answer["refusal"] == "alert resolved before acting"
    assert answer["message"].startswith("alert resolved before acting: the alert of decision")
    assert "act_when_resolved" in answer["message"]


async def test_a_rule_may_let_its_run_act_after_the_alert_resolved(
    make_client: ClientFactory, rules_dir: Any
) -> None:
    rule = rules_dir / "restart-service.yaml"
    text = rule.read_text()
    assert "    guard:\n" in text
    rule.write_text(text.replace("    guard:\n", "    guard:\n      act_when_resolved: true\n", 1))
    client, service = await make_client()
    decision = await admitted(client, service)
    await post(client, "resolved_single_servicedown")
    await wait_for(lambda: settled(service))
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": RUN})).json()
    assert answer["act"] is True


async def test_a_run_whose_key_another_decision_took_has_lost_its_lease(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client()
    decision = await admitted(client, service)
    async with service.store.transaction() as conn:
        await conn.execute(
            update(lease_table)
            .where(lease_table.c.decision_id == decision, lease_table.c.name.like("key:%"))
            .values(decision_id=decision + 1)
        )
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": RUN})).json()
    assert answer["act"] is False
    assert answer["refusal"] == "lease lost"
    assert "no longer holds key 'restart-crashed-service:" in answer["message"]


async def test_the_run_of_an_ended_decision_may_not_act_again(make_client: ClientFactory) -> None:
    client, service = await make_client()
    decision = await admitted(client, service)
    await leases.finish(service.store, decision, "COMPLETED")
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": RUN})).json()
    assert answer["act"] is False
    assert answer["refusal"] == "decision ended"
    assert "(COMPLETED)" in answer["message"]
    assert "responder run" in answer["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"flow_run_id": RUN}, "decision_id"),
        ({"decision_id": 1}, "flow_run_id"),
        ({"decision_id": "1", "flow_run_id": RUN}, "decision_id"),
        ({"decision_id": 0, "flow_run_id": RUN}, "decision_id"),
        ({"decision_id": 2**31, "flow_run_id": RUN}, "decision_id"),
        ({"decision_id": 1, "flow_run_id": "not-a-run; DROP TABLE"}, "flow_run_id"),
        ({"decision_id": 1, "flow_run_id": RUN, "generation": 2}, "generation"),
        ([1, RUN], "(body)"),
    ],
)
async def test_a_bad_body_is_422_naming_the_field(
    make_client: ClientFactory, body: Any, field: str
) -> None:
    client, _service = await make_client()
    response = await ask(client, body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "body is not a fencing check"
    assert field in [f["field"] for f in answer["fields"]]


async def test_not_json_is_422_and_credentials_come_first(make_client: ClientFactory) -> None:
    client, _service = await make_client(operator_token="runner-secret")
    response = await client.post(
        "/api/v1/fencing", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid credentials"}
    response = await client.post(
        "/api/v1/fencing",
        content=b"{not json",
        headers={"content-type": "application/json", "authorization": "Bearer runner-secret"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "body is not a fencing check"


async def test_a_run_responder_ended_as_lost_has_lost_its_lease(
    make_client: ClientFactory,
) -> None:
    client, service = await make_client()
    decision = await admitted(client, service)
    await leases.finish(service.store, decision, "EXPIRED", detail="lost")
    answer = (await ask(client, {"decision_id": decision, "flow_run_id": RUN})).json()
    assert answer["refusal"] == "lease lost"
    assert "ended as lost (EXPIRED)" in answer["message"]
