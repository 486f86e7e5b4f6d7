"""Two Responder processes (`responder serve`) on one PostgreSQL database, fed the same
webhook stream, against the real Prefect test server and its served flow runner: exactly
one flow run per key; and when the leader dies, the other replica takes over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.authoring.demo import DemoService
from tests.helpers import (
    POSTGRES_URL,
    ROOT,
    fixture_json,
    free_port,
    reset_postgres,
    wait_for,
)

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

JSON = {"content-type": "application/json"}


class Replica:
    def __init__(self, name: str, base: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / f"{name}.log"
        data = base / name
        data.mkdir()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "responder", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env={**env, "RESPONDER_DATA_DIR": str(data)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self) -> dict[str, Any] | None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
        try:
            async with httpx.AsyncClient() as http:
                response = await http.get(f"{self.url}/readyz")
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def replicas(
    flow_runner: str, tmp_path: Path, rules_dir: Path, demo_service: DemoService
) -> Iterator[list[Replica]]:
    asyncio.run(reset_postgres())
    env = {
        **os.environ,
        "PREFECT_API_URL": flow_runner,
        "RESPONDER_DATABASE_URL": POSTGRES_URL,
        "RESPONDER_RULES_DIR": str(rules_dir),
        "RESPONDER_SERVICES_FILE": str(tmp_path / "no-services.yaml"),
        "RESPONDER_RULE_VARS": json.dumps({"service_control_url": demo_service.url}),
        "RESPONDER_LEADER_CHECK_SECONDS": "0.5",
        "RESPONDER_POLL_SECONDS": "1",
        "RESPONDER_RELOAD_CHECK_SECONDS": "0",
    }
    started = [Replica(name, tmp_path, env) for name in ("a", "b")]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


def payload(host: str, starts_at: str = "2026-11-26T10:00:00Z") -> bytes:
    body = fixture_json("firing_single_servicedown")
    alert = body["alerts"][0]
    alert["labels"].update(instance=host, service="checkout")
    alert["fingerprint"] = f"{int(host.split('-')[1]):016x}"
    alert["startsAt"] = starts_at
    return json.dumps(body).encode()


async def decisions(replica: Replica) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{replica.url}/api/v1/decisions", params={"limit": 1000})
        response.raise_for_status()
        return list(response.json()["decisions"])


async def flow_runs_of_key(api_url: str, key: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{api_url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [f"key:{key}"]}}}
        )
        response.raise_for_status()
        return list(response.json())


async def test_two_processes_on_one_database_make_one_flow_run_per_key(
    replicas: list[Replica], flow_runner: str, demo_service: DemoService
) -> None:
    a, b = replicas
    await wait_for(a.ready, timeout=60)
    await wait_for(b.ready, timeout=60)
    hosts = [f"rep-{i}" for i in range(1, 9)]
    async with httpx.AsyncClient() as http:
        # The same stream to both replicas at once, each alert twice (as an HA pair of
        # Alertmanagers sends it).
        sends = [
            http.post(f"{replica.url}/webhook/alertmanager", content=payload(h), headers=JSON)
            for h in hosts
            for replica in (a, b, a, b)
        ]
        responses = await asyncio.gather(*sends)
    assert {r.status_code for r in responses} == {200}

    async def all_completed() -> list[dict[str, Any]] | None:
        rows = [d for d in await decisions(b) if d["verdict"] == "admitted"]
        done = len(rows) == len(hosts) and all(d["flow_run_state"] for d in rows)
        return rows if done else None

    rows = await wait_for(all_completed, timeout=120, every=0.5)
    assert {d["flow_run_state"] for d in rows} == {"COMPLETED"}
    for host in hosts:
        assert (
            len(
                await flow_runs_of_key(
                    flow_runner, f"restart-crashed-service:restart-service/{host}/checkout"
                )
            )
            == 1
        )
    assert sorted(demo_service.restarts) == sorted((h, "checkout") for h in hosts)
    every = await decisions(a)  # both replicas read the same log
    assert len([d for d in every if d["verdict"] == "admitted"]) == len(hosts)
    assert len([d for d in every if d["verdict"] == "duplicate"]) == 3 * len(hosts)


async def test_when_the_leader_dies_the_other_replica_takes_over(
    replicas: list[Replica], demo_service: DemoService
) -> None:
    a, b = replicas
    states = {r.name: await wait_for(r.ready, timeout=60) for r in replicas}
    leader, follower = (a, b) if states["a"]["checks"]["leader"] else (b, a)
    assert not states[follower.name]["checks"]["leader"]
    leader.kill()  # no clean shutdown: its PostgreSQL session, and advisory lock, just end

    async def leads() -> bool:
        state = await follower.ready()
        return bool(state and state["checks"]["leader"])

    await wait_for(leads, timeout=30)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{follower.url}/webhook/alertmanager", content=payload("rep-99"), headers=JSON
        )
    assert response.status_code == 200

    async def decided() -> list[dict[str, Any]] | None:
        rows = [d for d in await decisions(follower) if d["flow_run_state"] == "COMPLETED"]
        return rows or None

    [row] = await wait_for(decided, timeout=90, every=0.5)
    assert row["labels"]["instance"] == "rep-99"
    assert demo_service.restarts == [("rep-99", "checkout")]
