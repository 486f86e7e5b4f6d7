"""Decisions become real Prefect flow runs (prefect_test_harness plus a served runner)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.authoring.demo import DemoService
from responder.exceptions import ApprovalError, DispatchError
from responder.runtime.service import Service
from tests import servers
from tests.helpers import ROOT, app_client, fixture_json, free_port, make_settings, wait_for

pytestmark = pytest.mark.prefect

URL = "/webhook/alertmanager"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def running(
    flow_runner: str, tmp_path: Path, rules_dir: Path, demo_service: DemoService
) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    # Polling is slowed to 60 s so that final states within the tests' timeouts must have
    # come from Prefect's event stream.
    settings = make_settings(
        tmp_path,
        rules_dir,
        rule_vars={"service_control_url": demo_service.url},
        poll_seconds=60,
    )
    service = Service(settings, prefect_api_url=flow_runner)
    await service.start()
    client = app_client(service)
    yield client, service
    await client.aclose()
    await service.stop()


def payload(instance: str, service: str = "checkout") -> bytes:
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["labels"].update(instance=instance, service=service)
    body["alerts"][0]["fingerprint"] = f"{abs(hash((instance, service))):x}"[:16]
    return json.dumps(body).encode()


async def decisions(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/decisions", params={"limit": 1000}, headers=headers)
    return list(reversed(response.json()["decisions"]))


async def final(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> list[dict[str, Any]] | None:
    rows = [d for d in await decisions(client, headers) if d["verdict"] == "admitted"]
    return rows if rows and all(d["flow_run_state"] for d in rows) else None


async def flow_runs_tagged(api_url: str, tag: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{api_url}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [tag]}}},
        )
        response.raise_for_status()
        return list(response.json())


async def test_decision_runs_a_flow_that_completes_and_releases_the_lease(
    running: tuple[httpx.AsyncClient, Service], demo_service: DemoService
) -> None:
    client, service = running
    response = await client.post(URL, content=payload("host-11"), headers=JSON)
    assert response.status_code == 200
    [decision] = await wait_for(lambda: final(client), timeout=45)
    assert decision["flow_run_state"] == "COMPLETED"
    assert demo_service.restarts == [("host-11", "checkout")]
    assert decision["flow_run_url"].endswith(f"/runs/flow-run/{decision['flow_run_id']}")
    assert await service.store.leases.count() == 0
    dispatcher = service.dispatcher
    assert dispatcher is not None
    [run] = await flow_runs_tagged(
        dispatcher.api_url, "key:restart-crashed-service:restart-service/host-11/checkout"
    )
    assert run["id"] == decision["flow_run_id"]
    assert "rule:restart-crashed-service" in run["tags"]
    assert run["parameters"]["host"] == "host-11"
    assert run["idempotency_key"].startswith(f"responder:decision:{decision['id']}:")

    async def outcome_heard() -> bool:
        return any(
            f.name == "outcome" and f.fields.get("state") == "COMPLETED"
            for f in service.loop.engine.facts()
        )

    # The closed loop: the final state came back to the engine as a fact rules can use.
    await wait_for(outcome_heard, timeout=10)

    async def decision_event() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{dispatcher.api_url}/events/filter",
                json={
                    "filter": {
                        "event": {"prefix": ["responder.decision."]},
                        "related": {"id": [f"prefect.flow-run.{run['id']}"]},
                    },
                    "limit": 50,
                },
            )
            response.raise_for_status()
            return [
                e
                for e in response.json()["events"]
                if e["resource"]["prefect.resource.id"] == f"responder.decision.{decision['id']}"
                # Other tests' stores on this Prefect server have decisions of the same id.
                and f"prefect.flow-run.{run['id']}"
                in [r["prefect.resource.id"] for r in e["related"]]
            ]

    # The Prefect UI's event feed shows why the run exists.
    [event] = await wait_for(decision_event, timeout=15, every=0.5)
    assert event["event"] == "responder.decision.admitted"
    assert event["related"][0]["prefect.resource.id"] == f"prefect.flow-run.{run['id']}"
    assert event["payload"]["rule"] == "restart-crashed-service"

    # The run tells its own story in the Prefect UI: a name that says what and where, the
    # incident in its tags, and artifacts written at dispatch and at the end.
    fingerprint = decision["incident"].partition("@")[0]
    assert run["name"] == "restart-service · ServiceDown checkout@host-11"
    assert f"fingerprint:{fingerprint}" in run["tags"]
    assert f"decision:{decision['id']}" in run["tags"]

    async def artifacts() -> dict[str, dict[str, Any]] | None:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{dispatcher.api_url}/artifacts/filter",
                json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}},
            )
            response.raise_for_status()
            found = {a["key"]: a for a in response.json()}
        return found if {"responder-dispatch", "responder-outcome"} <= found.keys() else None

    told = await wait_for(artifacts, timeout=15, every=0.5)
    why = told["responder-dispatch"]["data"]
    assert "rule **restart-crashed-service**" in why
    assert "| instance | host-11 |" in why
    assert "| key | restart-crashed-service:restart-service/host-11/checkout |" in why
    assert "## Earlier decisions about this alert" in why
    assert "COMPLETED" in told["responder-outcome"]["data"]


async def test_fifty_concurrent_identical_webhooks_make_one_flow_run(
    running: tuple[httpx.AsyncClient, Service], demo_service: DemoService
) -> None:
    client, service = running
    body = payload("host-50")
    responses = await asyncio.gather(
        *(client.post(URL, content=body, headers=JSON) for _ in range(50))
    )
    assert [r.status_code for r in responses] == [200] * 50
    await wait_for(lambda: final(client), timeout=45)
    verdicts = [d["verdict"] for d in await decisions(client)]
    assert verdicts.count("admitted") == 1
    assert verdicts.count("duplicate") == 49
    dispatcher = service.dispatcher
    assert dispatcher is not None
    runs = await flow_runs_tagged(
        dispatcher.api_url, "key:restart-crashed-service:restart-service/host-50/checkout"
    )
    assert len(runs) == 1
    assert demo_service.restarts == [("host-50", "checkout")]


async def test_a_refused_decision_is_a_prefect_event_too(
    running: tuple[httpx.AsyncClient, Service],
) -> None:
    client, service = running
    body = fixture_json("firing_single_servicedown")
    first = body["alerts"][0]
    first["labels"].update(instance="host-r", service="checkout")
    second = json.loads(json.dumps(first))
    second["labels"]["service"] = "payments"
    second["fingerprint"] = "feedfacefeedface"
    body["alerts"] = [first, second]
    await client.post(URL, content=json.dumps(body), headers=JSON)
    rows = await wait_for(lambda: decisions(client))
    refused = [d for d in rows if d["verdict"] == "refused"]
    assert [d["refusal"] for d in refused] == ["mutex_held"]  # host:host-r is taken
    assert service.dispatcher is not None
    api_url = service.dispatcher.api_url

    async def refused_events() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{api_url}/events/filter",
                json={"filter": {"event": {"name": ["responder.decision.refused"]}}, "limit": 50},
            )
            response.raise_for_status()
            wanted = f"responder.decision.{refused[0]['id']}"
            return [
                e
                for e in response.json()["events"]
                if e["resource"]["prefect.resource.id"] == wanted
            ]

    [event] = await wait_for(refused_events, timeout=15, every=0.5)
    assert event["payload"]["refusal"] == "mutex_held"
    assert event["payload"]["key"] == "restart-crashed-service:restart-service/host-r/payments"


BATCHED = """
rules:
  - name: restart-fleet
    match: ['alertname="ServiceDown"']
    run:
      flow: restart-in-batches
      parameters:
        service: "{{ alert.labels.service }}"
        hosts: ["{{ alert.labels.instance }}"]
        control_url: "{{ vars.service_control_url }}"
        batch_size: "2"
      batch: {window: 2s, over: hosts}
    guard:
      key: "restart/{{ alert.labels.instance }}/{{ alert.labels.service }}"
"""


@pytest.fixture
def batched_rules(rules_dir: Path) -> Path:
    (rules_dir / "restart-service.yaml").unlink()
    (rules_dir / "fleet.yaml").write_text(BATCHED)
    return rules_dir


async def test_decisions_within_the_window_share_one_batched_flow_run(
    batched_rules: Path,
    running: tuple[httpx.AsyncClient, Service],
    demo_service: DemoService,
) -> None:
    client, service = running
    hosts = ["fleet-1", "fleet-2", "fleet-3"]
    for host in hosts:  # three webhooks, within the rule's 2 s window
        await client.post(URL, content=payload(host, service="api"), headers=JSON)
    rows = await wait_for(lambda: final(client), timeout=90)
    assert [d["labels"]["instance"] for d in rows] == hosts  # three decisions, three keys
    assert len({d["flow_run_id"] for d in rows}) == 1  # one flow run
    assert {d["flow_run_state"] for d in rows} == {"COMPLETED"}
    assert sorted(demo_service.restarts) == [(host, "api") for host in hosts]
    dispatcher = service.dispatcher
    assert dispatcher is not None
    async with httpx.AsyncClient() as http:
        run = (await http.get(f"{dispatcher.api_url}/flow_runs/{rows[0]['flow_run_id']}")).json()
    assert run["parameters"]["hosts"] == hosts
    assert await service.store.leases.count() == 0


async def test_hostile_parameters_are_refused_before_any_action(
    running: tuple[httpx.AsyncClient, Service], demo_service: DemoService
) -> None:
    client, service = running
    body = payload("host-66;reboot", service="$(touch /tmp/pwned)")
    await client.post(URL, content=body, headers=JSON)
    [decision] = await wait_for(lambda: decisions(client), timeout=30)
    # The flow's own parameter schema refuses them before the guard: nothing is admitted.
    assert decision["verdict"] == "error"
    assert "host:" in decision["reason"] and "service:" in decision["reason"]
    assert decision["flow_run_id"] is None
    assert demo_service.restarts == []
    assert await service.store.leases.count() == 0
    assert not Path("/tmp/pwned").exists()


async def test_a_yaml_flow_started_by_hand_runs_on_the_served_deployment(
    running: tuple[httpx.AsyncClient, Service], demo_service: DemoService
) -> None:
    client, _ = running
    response = await client.post(
        "/api/v1/catalog/flows/restart-in-batches/runs",
        json={
            "parameters": {
                "service": "api",
                "hosts": ["web-1", "web-2", "web-3"],
                "control_url": demo_service.url,
                "batch_size": "2",
            },
            "reason": "OPS-7 roll the api",
            "requested_by": "alice",
        },
    )
    assert response.status_code == 202, response.text
    assert response.json()["decision"]["verdict"] == "admitted"
    [decision] = await wait_for(lambda: final(client), timeout=90)
    assert decision["flow_run_state"] == "COMPLETED", decision
    assert sorted(demo_service.restarts) == [("web-1", "api"), ("web-2", "api"), ("web-3", "api")]


@pytest.fixture
def approval_rules(rules_dir: Path) -> Path:
    rule = rules_dir / "restart-service.yaml"
    rule.write_text(rule.read_text().replace("    guard:\n", "    guard:\n      approval: true\n"))
    return rules_dir


async def paused_run(api_url: str, flow_run_id: str) -> bool:
    async with httpx.AsyncClient() as http:
        run = (await http.get(f"{api_url}/flow_runs/{flow_run_id}")).json()
    return bool(run["state"] and run["state"]["type"] == "PAUSED")


async def answer(api_url: str, flow_run_id: str, **run_input: Any) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(10):  # the shared test server answers 503 now and then when loaded
            response = await http.post(
                f"{api_url}/flow_runs/{flow_run_id}/resume", json={"run_input": run_input}
            )
            if response.status_code != 503:
                break
            await asyncio.sleep(1)
        response.raise_for_status()
        assert response.json()["status"] == "ACCEPT", response.text


@pytest.mark.parametrize("approved", [True, False])
async def test_a_run_that_needs_approval_waits_for_a_person(
    approved: bool,
    approval_rules: Path,
    running: tuple[httpx.AsyncClient, Service],
    demo_service: DemoService,
) -> None:
    client, service = running
    instance = f"host-a{int(approved)}"
    await client.post(URL, content=payload(instance), headers=JSON)

    async def created() -> str | None:
        rows = [d for d in await decisions(client) if d["flow_run_id"]]
        return rows[0]["flow_run_id"] if rows else None

    flow_run_id = await wait_for(created, timeout=30)
    dispatcher = service.dispatcher
    assert dispatcher is not None
    await wait_for(lambda: paused_run(dispatcher.api_url, flow_run_id), timeout=60)

    async def awaiting() -> bool:
        return [d["run_status"] for d in await decisions(client)] == ["awaiting approval"]

    await wait_for(awaiting, timeout=30)
    # Waiting for a person: nothing touched yet, and the key stays held.
    assert demo_service.restarts == []
    assert await service.store.leases.count() == 2
    await answer(
        dispatcher.api_url, flow_run_id, approved=approved, approver="alice", comment="on call"
    )
    [decision] = await wait_for(lambda: final(client), timeout=60)
    assert await service.store.leases.count() == 0
    if approved:
        assert decision["flow_run_state"] == "COMPLETED"
        assert demo_service.restarts == [(instance, "checkout")]
    else:
        assert decision["flow_run_state"] == "CANCELLED"
        assert decision["detail"] == "rejected by alice: on call"
        assert demo_service.restarts == []
    # Answered in the Prefect UI: the approver as typed there, marked so.
    approval = decision["approval"]
    assert (approval["by"], approval["via"], approval["approved"], approval["comment"]) == (
        "alice",
        "Prefect UI",
        approved,
        "on call",
    )


OPERATORS = [
    {"name": "alice", "token": "tok-alice", "role": "approver"},
    {"name": "victor", "token": "tok-victor", "role": "viewer"},
]


@pytest.fixture
async def served(
    flow_runner: str, tmp_path: Path, approval_rules: Path, demo_service: DemoService
) -> AsyncIterator[tuple[httpx.AsyncClient, Service, Path]]:
    """Responder on a real port, with named operators, and a settings file for the CLI."""
    port = free_port()
    settings = make_settings(
        tmp_path,
        approval_rules,
        port=port,
        operators=OPERATORS,
        rule_vars={"service_control_url": demo_service.url},
        poll_seconds=60,
    )
    config = tmp_path / "responder.yaml"
    config.write_text(f"port: {port}\ndata_dir: {tmp_path / 'cli'}\n")
    service = Service(settings, prefect_api_url=flow_runner)
    server, task = await servers.serve_in_process(settings, service)
    client = httpx.AsyncClient(base_url=settings.base_url, timeout=30)
    yield client, service, config
    await client.aclose()
    server.should_exit = True
    await task


async def cli(config: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`responder ARGS` as the operator whose token this is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RESPONDER_"))}
    env["RESPONDER_TOKEN"] = token
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "responder", *args, "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("approved", [True, False])
async def test_an_operator_approves_or_rejects_from_the_cli_and_the_log_says_who(
    approved: bool, served: tuple[httpx.AsyncClient, Service, Path], demo_service: DemoService
) -> None:
    client, service, config = served
    alice = {"authorization": "Bearer tok-alice"}
    instance = f"host-c{int(approved)}"
    await client.post(URL, content=payload(instance), headers=JSON)

    async def awaiting() -> dict[str, Any] | None:
        rows = await decisions(client, alice)
        waiting = [d for d in rows if d["run_status"] == "awaiting approval"]
        return waiting[0] if waiting else None

    # Prefect reports the run Paused: the decision awaits approval, wherever it is shown.
    decision = await wait_for(awaiting, timeout=90)
    flow_run_id = decision["flow_run_id"]
    assert decision["flow_run_state"] is None
    shown = await cli(config, "tok-victor", "decisions")
    assert f"flow run {flow_run_id} awaiting approval" in shown.stdout, shown
    status = await cli(config, "tok-victor", "status")
    assert "awaiting approval" in status.stdout, status
    fingerprint = decision["incident"].partition("@")[0]
    explained = await cli(config, "tok-victor", "explain", fingerprint)
    assert "awaiting approval" in explained.stdout, explained
    listed = await cli(config, "tok-victor", "approvals")
    assert listed.returncode == 0, listed
    assert f"flow run {flow_run_id}" in listed.stdout
    assert f"instance={instance}" in listed.stdout and "ServiceDown" in listed.stdout
    assert "rule restart-crashed-service" in listed.stdout
    assert f"will run restart-service(host={instance}, service=checkout" in listed.stdout
    # A viewer may look, not answer: 403 naming the roles that may.
    denied = await cli(config, "tok-victor", "approve", flow_run_id)
    assert denied.returncode == 1
    said = " ".join(denied.stderr.split())  # the error is wrapped to the terminal's width
    assert "403" in said and "this needs role approver or admin" in said, said
    assert demo_service.restarts == []
    if approved:
        answered = await cli(config, "tok-alice", "approve", flow_run_id, "--comment", "go")
        assert answered.stdout.strip() == "approved by alice", answered
    else:
        answered = await cli(config, "tok-alice", "reject", flow_run_id, "--reason", "not now")
        assert answered.stdout.strip() == "rejected by alice", answered
    [decision] = await wait_for(lambda: final(client, alice), timeout=90)
    approval = decision["approval"]
    assert (approval["by"], approval["via"], approval["approved"]) == (
        "alice",
        "responder API",
        approved,
    )
    assert await service.store.leases.count() == 0
    assert decision["approval_state"] == ("approved" if approved else "rejected")
    if approved:
        assert decision["flow_run_state"] == "COMPLETED"
        assert demo_service.restarts == [(instance, "checkout")]
    else:
        assert decision["flow_run_state"] == "CANCELLED"
        assert decision["detail"] == "rejected by alice: not now"
        assert demo_service.restarts == []
    shown = await cli(config, "tok-victor", "decisions")
    verdict = "approved" if approved else "rejected"
    assert f"{verdict} by alice via responder API" in shown.stdout, shown
    again = await client.post(f"/api/v1/approvals/{flow_run_id}/approve", headers=alice)
    assert again.status_code == 404, again.text
    assert (await client.get("/api/v1/approvals", headers=alice)).json() == {"approvals": []}


async def test_an_answer_prefect_refuses_leaves_the_run_awaiting(
    running: tuple[httpx.AsyncClient, Service],
) -> None:
    client, service = running
    await client.post(URL, content=payload("host-d1"), headers=JSON)
    [decision] = await wait_for(lambda: final(client), timeout=45)
    flow_run_id = decision["flow_run_id"]
    # As if it waited: Prefect, which knows the run is over, does not resume it.
    assert await service.store.approvals.set(flow_run_id, "awaiting", (None,))
    dispatcher = service.dispatcher
    assert dispatcher is not None
    with pytest.raises(DispatchError, match=f"did not resume flow run {flow_run_id}"):
        await dispatcher.answer_approval(flow_run_id, True, "alice", "")
    [row] = await service.store.decisions.recent(limit=1)
    assert (row["approval_state"], row["approval"]) == ("awaiting", None)
    with pytest.raises(ApprovalError):
        await dispatcher.answer_approval("00000000-0000-0000-0000-000000000002", True, "a", "")


def kill_flow_run_process(api_url: str) -> bool:
    """SIGKILL the newest flow-run process of the runner serving `api_url` (this session's
    Prefect server, so no other process matches).

    The runner forks each run from its fork server (`deployments.start_flow_runs_warm`): a
    run's process shows the fork server's command line and environment, and its parent is
    the fork server. This test starts one run at a time, so the newest is the one to kill.
    """
    import os
    import signal

    wanted = f"PREFECT_API_URL={api_url}".encode()

    def stat(pid: str) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    def forkserver(pid: str) -> bool:
        return b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()

    runs: list[tuple[int, int]] = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if wanted not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
            fields = stat(pid)
            if forkserver(pid) and forkserver(fields[1]):  # forked by the fork server
                runs.append((int(fields[19]), int(pid)))  # (start time, pid)
        except OSError:
            continue
    if not runs:
        return False
    os.kill(max(runs)[1], signal.SIGKILL)
    return True


async def test_a_flow_run_killed_mid_way_frees_its_key(
    running: tuple[httpx.AsyncClient, Service], demo_service: DemoService
) -> None:
    client, service = running
    response = await client.post(
        "/api/v1/catalog/flows/http-call/runs",
        json={
            "parameters": {
                "url": f"{demo_service.url}/start",
                "verify_url": f"{demo_service.url}/health/never/healthy",
                "verify_within_seconds": 300,
            },
            "reason": "a long run to kill",
            "requested_by": "test",
        },
    )
    assert response.status_code == 202, response.text
    decision_id = response.json()["decision"]["id"]
    assert service.dispatcher is not None
    api_url = service.dispatcher.api_url

    async def running_run() -> str | None:
        rows = [d for d in await decisions(client) if d["id"] == decision_id]
        if not rows or not rows[0]["flow_run_id"]:
            return None
        async with httpx.AsyncClient() as http:
            run = (await http.get(f"{api_url}/flow_runs/{rows[0]['flow_run_id']}")).json()
        state = (run.get("state") or {}).get("type")
        return str(rows[0]["flow_run_id"]) if state == "RUNNING" else None

    await wait_for(running_run, timeout=60, every=0.5)
    await wait_for(lambda: _posted(demo_service, "/start"), timeout=30)
    assert await service.store.leases.count() == 1
    assert kill_flow_run_process(api_url), "the flow run's process was not found"

    async def ended() -> dict[str, Any] | None:
        rows = [d for d in await decisions(client) if d["id"] == decision_id]
        return rows[0] if rows and rows[0]["flow_run_state"] else None

    row = await wait_for(ended, timeout=60, every=0.5)
    assert row["flow_run_state"] == "CRASHED"
    assert await service.store.leases.count() == 0


async def _posted(demo_service: DemoService, path: str) -> bool:
    return any(p == path for p, _ in demo_service.posts)


@pytest.mark.alertmanager
async def test_a_run_longer_than_its_lease_keeps_its_silence_until_it_ends(
    flow_runner: str, tmp_path: Path, approval_rules: Path, demo_service: DemoService
) -> None:
    """The run waits for approval for three times `lease_seconds`: its lease is renewed, and
    its silence with it; rejected, the run ends and the silence is lifted at once."""
    rule = approval_rules / "restart-service.yaml"
    rule.write_text(rule.read_text().replace("    guard:\n", "    guard:\n      silence: true\n"))
    with servers.alertmanager(tmp_path, free_port(), servers.ROUTES_NOWHERE) as alertmanager:
        settings = make_settings(
            tmp_path,
            approval_rules,
            rule_vars={"service_control_url": demo_service.url},
            alertmanager_url=alertmanager,
            lease_seconds=3,
            poll_seconds=0.5,
        )
        service = Service(settings, prefect_api_url=flow_runner)
        await service.start()
        client = app_client(service)
        try:
            await client.post(URL, content=payload("host-silenced"), headers=JSON)

            async def created() -> str | None:
                rows = [d for d in await decisions(client) if d["flow_run_id"]]
                return rows[0]["flow_run_id"] if rows else None

            flow_run_id = await wait_for(created, timeout=30)

            async def silences() -> list[dict[str, Any]]:
                async with httpx.AsyncClient() as http:
                    found = (await http.get(f"{alertmanager}/api/v2/silences")).json()
                return [s for s in found if flow_run_id in s["comment"]]

            async def active() -> list[dict[str, Any]]:
                return [s for s in await silences() if s["status"]["state"] == "active"]

            assert await wait_for(active, timeout=30)
            assert service.dispatcher is not None
            await wait_for(lambda: paused_run(flow_runner, flow_run_id), timeout=60)
            await asyncio.sleep(3 * settings.lease_seconds)
            # Without renewal it would have expired twice over by now.
            assert [s["status"]["state"] for s in await active()] == ["active"]
            assert await service.store.leases.count() == 2
            await answer(flow_runner, flow_run_id, approved=False, approver="bob", comment="no")
            [decision] = await wait_for(lambda: final(client), timeout=60)
            assert decision["flow_run_state"] == "CANCELLED"

            async def lifted() -> bool:
                return await active() == [] and bool(await silences())

            await wait_for(lifted, timeout=10)
            assert demo_service.restarts == []
        finally:
            await client.aclose()
            await service.stop()
