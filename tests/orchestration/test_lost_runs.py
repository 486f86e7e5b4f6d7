"""Lost runs: a run PENDING or RUNNING that no runner runs any more is marked CRASHED by
Responder, and its key is freed.

The watch on its own (`LostRuns`, plain values), then a real Prefect server with a real flow
runner that the test kills with SIGKILL while its run is RUNNING; for PENDING, the test plays
the runner that took a run and died at once (it sets the run PENDING, as a runner does when
it picks a run up, and nothing ever runs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from responder.orchestration.flow_catalog import flow_names
from responder.orchestration.lost_runs import LostRuns
from responder.runtime.service import Service
from responder.runtime.supervisor import Supervisor
from tests.helpers import fixture_json, free_port, make_settings, wait_for
from tests.runtime.test_up import descendants
from tests.servers import QuietHandler, http_server

# Above the runner's heartbeat period (30 s, Prefect's minimum): a live run is never lost.
LOST_AFTER = 40
HEARTBEAT = "30"


def run(flow_run_id: str, state: str, entered: float) -> Any:
    """A flow run as Prefect's client gives it: its id and its state (type, timestamp)."""
    timestamp = datetime.fromtimestamp(entered, UTC)
    return SimpleNamespace(
        id=flow_run_id,
        state=SimpleNamespace(type=SimpleNamespace(value=state), timestamp=timestamp),
    )


def test_a_run_not_heard_of_for_the_time_is_lost_once_the_stream_listened_that_long() -> None:
    watch = LostRuns(90)
    runs = [run("pending", "PENDING", 1000), run("running", "RUNNING", 1000)]
    runs += [run("paused", "PAUSED", 1000), run("scheduled", "SCHEDULED", 1000)]
    assert watch.lost(runs, now=5000) == []  # not listening: nothing judged
    watch.listening(now=4950)
    assert watch.lost(runs, now=5000) == []  # listening for 50 s only
    watch.heard("running", now=4990)  # a heartbeat
    lost = watch.lost(runs, now=5040)
    assert [(r.flow_run_id, r.state, round(r.silent_for)) for r in lost] == [
        ("pending", "PENDING", 4040)
    ]
    assert lost[0].message.startswith("lost: PENDING with no heartbeat for 4040s")
    assert [r.flow_run_id for r in watch.lost(runs, now=5080)] == ["pending", "running"]
    watch.deaf()  # the stream was lost: judge nothing until it listened 90 s again
    assert watch.lost(runs, now=5080) == []
    assert LostRuns(0).lost(runs, now=5080) == []  # 0: never


def test_a_run_prefect_forgot_for_the_time_is_reported_once() -> None:
    watch = LostRuns(90)
    assert watch.forgotten(["a", "b"], {"a"}, now=1000) == []
    assert watch.forgotten(["a", "b"], {"a", "b"}, now=1050) == []  # b is back
    assert watch.forgotten(["a", "b"], {"a"}, now=1060) == []
    assert watch.forgotten(["a", "b"], {"a"}, now=1150) == ["b"]
    assert watch.forgotten(["a"], {"a"}, now=1300) == []


class Target:
    """The service control API: restarts are counted; health never comes back."""

    def __init__(self) -> None:
        self.restarts: list[str] = []
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.restarts)


@pytest.fixture
def target() -> Iterator[tuple[Target, str]]:
    calls = Target()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            with calls.lock:
                calls.restarts.append(self.path)
            self.reply(200, b"{}", "application/json")

        def do_GET(self) -> None:
            self.reply(503, b"down")

    with http_server(Handler) as url:
        yield calls, url


def alert(instance: str) -> bytes:
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["labels"]["instance"] = instance
    body["alerts"][0]["fingerprint"] = f"{abs(hash(instance)) % 16**12:016x}"
    return json.dumps(body).encode()


async def decision_of(service: Service, instance: str) -> dict[str, Any] | None:
    rows = await service.store.decisions.recent(limit=50)
    found = [r for r in rows if r["verdict"] == "admitted" and r["labels"]["instance"] == instance]
    return found[0] if found else None


async def decided_again(service: Service, decision: dict[str, Any]) -> None:
    """The lost run's incident is decided again once the failure cooldown is over (the
    shipped rule's `cooldown_failed`, 5m): a durable timer for the next attempt is set."""
    fingerprint = decision["incident"].partition("@")[0]

    async def timer() -> dict[str, Any] | None:
        timers = await service.store.timers.of(f"{fingerprint}@%")
        return timers[0] if timers else None

    attempt = await wait_for(timer, timeout=30)
    assert (attempt["kind"], attempt["rule"]) == ("retry", decision["rule"])
    assert attempt["reason"] == f"re-examined: decision {decision['id']}'s run ended CRASHED"
    assert attempt["due_at"] == pytest.approx(decision["finished_at"] + 301, abs=5)


@pytest.mark.prefect
@pytest.mark.timeout(600)
async def test_a_killed_runner_s_runs_are_crashed_and_their_keys_freed(
    tmp_path: Path, rules_dir: Path, target: tuple[Target, str]
) -> None:
    calls, url = target
    # A Prefect server and a runner of its own, so that the runner can be killed.
    prefect = Supervisor(
        tmp_path / "prefect",
        free_port(),
        None,
        worker_env={"RESPONDER_FENCING": "off", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT},
    )
    prefect.start(ready_timeout=120)
    service: Service | None = None
    try:
        _server, runner = prefect.children

        async def deployments() -> bool:
            async with httpx.AsyncClient() as http:
                response = await http.post(f"{prefect.api_url}/deployments/filter", json={})
            return response.status_code == 200 and len(response.json()) >= len(flow_names())

        await wait_for(deployments, timeout=120, every=0.5)
        settings = make_settings(
            tmp_path, rules_dir, rule_vars={"service_control_url": url}, lost_run_seconds=LOST_AFTER
        )
        service = Service(settings, prefect_api_url=prefect.api_url)
        await service.start()

        # RUNNING: the run restarts, then waits for health; its runner is killed.
        await service.accept("alertmanager", alert("host-running"))

        async def restarted() -> bool:
            return calls.count == 1

        await wait_for(restarted, timeout=120)
        assert runner.process is not None
        # The machine is lost: the runner and the flow-run processes it started (each in a
        # session of its own) die at once.
        doomed = [runner.process.pid, *descendants(runner.process.pid)]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        async def crashed(instance: str) -> dict[str, Any] | None:
            row = await decision_of(service, instance)  # type: ignore[arg-type]
            return row if row and row["flow_run_state"] else None

        decision = await wait_for(lambda: crashed("host-running"), timeout=120)
        released = time.monotonic() - killed
        assert decision["flow_run_state"] == "CRASHED"
        assert decision["detail"].startswith("lost: RUNNING with no heartbeat for ")
        await _crashed_in_prefect(prefect.api_url, decision["flow_run_id"])
        held = (await service.guard_state())["leases"]
        assert all(lease["decision_id"] != decision["id"] for lease in held)
        [incident] = await service.store.incidents.like(decision["incident"].partition("@")[0])
        assert incident["state"] != "running"
        await decided_again(service, decision)
        assert released < LOST_AFTER + 15
        print(f"runner killed → key released in {released:.1f}s (lost_run_seconds {LOST_AFTER})")

        # PENDING: a runner took the run (PENDING) and died before starting it.
        await service.accept("alertmanager", alert("host-pending"))

        async def created() -> str | None:
            row = await decision_of(service, "host-pending")  # type: ignore[arg-type]
            return row["flow_run_id"] if row else None

        flow_run_id = await wait_for(created, timeout=60)
        async with httpx.AsyncClient() as http:
            taken = await http.post(
                f"{prefect.api_url}/flow_runs/{flow_run_id}/set_state",
                json={"state": {"type": "PENDING"}, "force": True},
            )
            assert taken.status_code in (200, 201), taken.text
        decision = await wait_for(lambda: crashed("host-pending"), timeout=120)
        assert decision["flow_run_state"] == "CRASHED"
        assert decision["detail"].startswith("lost: PENDING with no heartbeat for ")
        await _crashed_in_prefect(prefect.api_url, flow_run_id)
        await decided_again(service, decision)
        assert calls.restarts == ["/restart/host-running/checkout"]  # one fix call in all
    finally:
        if service is not None:
            await service.stop()
        prefect.stop()


async def _crashed_in_prefect(api_url: str, flow_run_id: str) -> None:
    async with httpx.AsyncClient() as http:
        state = (await http.get(f"{api_url}/flow_runs/{flow_run_id}")).json()["state"]
    assert state["type"] == "CRASHED"
    assert state["message"].startswith("lost: ")
    assert datetime.fromisoformat(state["timestamp"]) > datetime.now(UTC) - timedelta(minutes=5)
