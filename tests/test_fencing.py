"""Fencing end to end: `responder up` (its own Prefect server and flow runner), real webhooks,
and a target that records every call a flow makes.

A run acts only while its decision holds the key and its alert still fires: a run created
through Prefect's API, a Retry of a finished run, a run whose alert resolved before its first
step, and a run whose key was taken between two steps all stop without calling the target,
CANCELLED with the reason, and the decision log says it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, fixture_json, free_port, prefect_post
from tests.servers import QuietHandler, http_server, stop

pytestmark = pytest.mark.prefect

RULES = """
rules:
  - name: fence-approve
    match: ['alertname="FenceResolve"']
    run:
      flow: restart-service
      parameters:
        host: "{{ alert.labels.instance }}"
        service: checkout
        restart_url: "{{ vars.target }}/restart/{{ alert.labels.instance | segment }}/checkout"
        health_url: "{{ vars.target }}/health/{{ alert.labels.instance | segment }}/checkout"
    guard:
      key: "fence-approve/{{ alert.labels.instance }}"
      approval: true
  - name: fence-plain
    match: ['alertname="FencePlain"']
    run:
      flow: restart-service
      parameters:
        host: "{{ alert.labels.instance }}"
        service: checkout
        restart_url: "{{ vars.target }}/restart/{{ alert.labels.instance | segment }}/checkout"
        health_url: "{{ vars.target }}/health/{{ alert.labels.instance | segment }}/checkout"
    guard:
      key: "fence-plain/{{ alert.labels.instance }}"
  - name: fence-takeover
    match: ['alertname="FenceTakeover"']
    run:
      flow: restart-in-batches
      parameters:
        service: checkout
        hosts: ["{{ alert.labels.instance }}-a", "{{ alert.labels.instance }}-b"]
        control_url: "{{ vars.target }}"
        batch_size: "1"
    guard:
      key: "fence-takeover/{{ alert.labels.instance }}"
"""


@dataclass
class Target:
    """The systems the flows call: records every request; `on_restart` runs before the
    answer to a restart (a test takes the key over there)."""

    url: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)
    on_restart: Callable[[str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def restarts(self) -> list[str]:
        with self.lock:
            return [path for method, path in self.calls if method == "POST"]


@dataclass
class Up:
    base: str
    prefect: str
    data_dir: Path
    log: Path
    target: Target


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("fencing")
    target = Target()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            with target.lock:
                target.calls.append(("POST", self.path))
            if target.on_restart is not None:
                target.on_restart(self.path)
            self.reply(200, b"{}", "application/json")

        def do_GET(self) -> None:
            with target.lock:
                target.calls.append(("GET", self.path))
            self.reply(200, b"ok")

    rules = tmp / "rules"
    rules.mkdir()
    (rules / "fencing.yaml").write_text(RULES)
    port, prefect_port = free_port(), free_port()
    with http_server(Handler) as target.url:
        config = tmp / "responder.yaml"
        config.write_text(
            f"port: {port}\nprefect_port: {prefect_port}\ndata_dir: {tmp / 'data'}\n"
            f"rules_dir: {rules}\nservices_file: {tmp / 'services.yaml'}\n"
            f"rule_vars: {{target: '{target.url}'}}\npoll_seconds: 0.5\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        log = tmp / "up.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "responder", "up", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        base = f"http://127.0.0.1:{port}"
        prefect = f"http://127.0.0.1:{prefect_port}/api"
        try:
            wait(lambda: ready(base, prefect), 150, log, "responder up is not ready")
            yield Up(base, prefect, tmp / "data", log, target)
        finally:
            stop(process, grace=60)


def ready(base: str, prefect: str) -> bool:
    try:
        deployment = httpx.get(f"{prefect}/deployments/name/restart-service/restart-service")
        return (
            httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            and deployment.status_code == 200
        )
    except httpx.HTTPError:
        return False


def wait(predicate: Callable[[], Any], timeout: float, log: Path, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-4000:]}"
        time.sleep(0.3)
    return found


def alert(alertname: str, instance: str, status: str = "firing") -> bytes:
    body = fixture_json("firing_single_servicedown")
    [one] = body["alerts"]
    one["labels"] = {"alertname": alertname, "instance": instance, "severity": "critical"}
    one["fingerprint"] = f"{abs(hash((alertname, instance))) % 16**12:016x}"
    one["status"] = body["status"] = status
    if status == "resolved":
        one["endsAt"] = "2026-11-25T23:20:00.000Z"
    body["groupLabels"] = {"alertname": alertname}
    body["commonLabels"] = one["labels"]
    return json.dumps(body).encode()


def send(up: Up, body: bytes) -> None:
    response = httpx.post(
        f"{up.base}/webhook/alertmanager",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def decision_of(up: Up, rule: str, *, ended: bool = False) -> dict[str, Any] | None:
    rows = httpx.get(f"{up.base}/api/v1/decisions", params={"rule": rule}, timeout=10).json()
    admitted = [row for row in rows["decisions"] if row["verdict"] == "admitted"]
    if not admitted or (ended and not admitted[0]["flow_run_state"]):
        return None
    found: dict[str, Any] = admitted[0]
    return found


def flow_run(up: Up, flow_run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{up.prefect}/flow_runs/{flow_run_id}").json()
    return found


def final_run(up: Up, flow_run_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        run = flow_run(up, flow_run_id)
        return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CANCELLED") else None

    found: dict[str, Any] = wait(final, 90, up.log, f"flow run {flow_run_id} did not end")
    return found


def test_a_run_created_through_prefects_api_does_not_act(up: Up) -> None:
    deployment = httpx.get(f"{up.prefect}/deployments/name/restart-service/restart-service").json()
    parameters = {
        "host": "by-hand",
        "service": "checkout",
        "restart_url": f"{up.target.url}/restart/by-hand/checkout",
        "health_url": f"{up.target.url}/health/by-hand/checkout",
    }
    created = prefect_post(
        f"{up.prefect}/deployments/{deployment['id']}/create_flow_run",
        {"parameters": parameters},
    )
    assert created.status_code == 201, created.text
    run = final_run(up, created.json()["id"])
    assert run["state"]["type"] == "CANCELLED"
    assert run["state"]["message"].startswith("not started by Responder: ")
    assert "responder run" in run["state"]["message"]
    assert up.target.calls == []


def test_a_retry_of_a_completed_run_does_not_act_again(up: Up) -> None:
    send(up, alert("FencePlain", "plain-1"))
    decision = wait(lambda: decision_of(up, "fence-plain", ended=True), 90, up.log, "no end")
    assert decision["flow_run_state"] == "COMPLETED"
    assert up.target.restarts() == ["/restart/plain-1/checkout"]
    took = flow_run(up, decision["flow_run_id"])["total_run_time"]
    print(f"an ordinary restart-service run, one fenced step: {took:.2f}s")
    # What the Prefect UI's Retry does: the finished run is scheduled again, same id, tags.
    retried = prefect_post(
        f"{up.prefect}/flow_runs/{decision['flow_run_id']}/set_state",
        {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
    )
    assert retried.status_code in (200, 201), retried.text

    def ran_again() -> dict[str, Any] | None:
        run = flow_run(up, decision["flow_run_id"])
        return run if run["state"]["type"] == "CANCELLED" else None

    run = wait(ran_again, 90, up.log, "the retried run did not end cancelled")
    assert run["state"]["message"].startswith("decision ended: ")
    assert "responder run" in run["state"]["message"]
    assert up.target.restarts() == ["/restart/plain-1/checkout"]  # still one


def test_an_alert_resolved_before_the_first_step_stops_the_run(up: Up) -> None:
    before = len(up.target.calls)
    send(up, alert("FenceResolve", "resolve-1"))

    def waiting() -> str | None:
        rows = httpx.get(f"{up.base}/api/v1/approvals", timeout=10).json()["approvals"]
        return next((row["flow_run_id"] for row in rows), None)

    flow_run_id = wait(waiting, 90, up.log, "the run never waited for approval")
    send(up, alert("FenceResolve", "resolve-1", status="resolved"))
    wait(lambda: resolved(up, "resolve-1"), 30, up.log, "the resolution was not handled")
    approved = httpx.post(f"{up.base}/api/v1/approvals/{flow_run_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    run = final_run(up, flow_run_id)
    assert run["state"]["type"] == "CANCELLED"
    assert run["state"]["message"].startswith("alert resolved before acting: ")
    decision = wait(lambda: decision_of(up, "fence-approve", ended=True), 30, up.log, "no end")
    assert decision["flow_run_state"] == "CANCELLED"
    assert decision["detail"].startswith("alert resolved before acting: ")
    assert up.target.calls[before:] == []


def resolved(up: Up, instance: str) -> bool:
    rows = httpx.get(f"{up.base}/api/v1/decisions", params={"verdict": "resolved"}).json()
    return any(row["labels"].get("instance") == instance for row in rows["decisions"])


def test_a_key_taken_between_two_steps_stops_the_second(up: Up) -> None:
    def take_the_key(path: str) -> None:
        if path != "/restart/over-1-a/checkout":
            return
        # Another decision takes the key (as after this one's lease expired): a new holder.
        with sqlite3.connect(up.data_dir / "responder.db", timeout=30) as db:
            (decision_id,) = db.execute(
                "SELECT id FROM decisions WHERE rule = 'fence-takeover' AND verdict = 'admitted'"
            ).fetchone()
            db.execute(
                "UPDATE leases SET decision_id = ? WHERE decision_id = ? AND name LIKE 'key:%'",
                (decision_id + 100_000, decision_id),
            )

    up.target.on_restart = take_the_key
    try:
        send(up, alert("FenceTakeover", "over-1"))
        decision = wait(lambda: decision_of(up, "fence-takeover", ended=True), 90, up.log, "-")
    finally:
        up.target.on_restart = None
    assert decision["flow_run_state"] == "CANCELLED", decision
    assert decision["detail"].startswith("lease lost: "), decision["detail"]
    restarts = [path for path in up.target.restarts() if "over-1" in path]
    assert restarts == ["/restart/over-1-a/checkout"]
    run = flow_run(up, decision["flow_run_id"])
    assert run["state"]["message"].startswith("lease lost: ")
