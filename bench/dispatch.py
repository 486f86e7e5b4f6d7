"""Decision → flow run created, against a real Prefect server on PostgreSQL.

Starts `prefect server start` on a PostgreSQL database of its own, registers every flow as a
deployment (no worker polls it: runs stay scheduled, so only their creation is measured),
starts `responder serve` pointed at it, and posts remediation alerts at a steady rate. For
each admitted decision it compares the decision's time with its flow run's creation time in
Prefect, and checks that every admitted decision has exactly one flow run.

    python bench/dispatch.py --alerts 300 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import Sender, Server, _free_port, _pct  # noqa: E402

POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432"
PREFECT_DB = "prefect_bench"


async def _fresh_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def start_prefect(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(workdir / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"{POSTGRES}/{PREFECT_DB}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    with (workdir / "prefect.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return process, api
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("Prefect did not start; see prefect.log")


def register_deployments(api: str) -> None:
    """Every flow as `<flow>/<flow>`, without serving it."""
    code = (
        "from flows import flow_names, load_flow\n"
        "from prefect.types.entrypoint import EntrypointType\n"
        "for name in flow_names():\n"
        "    load_flow(name).to_deployment(name=name,"
        " entrypoint_type=EntrypointType.MODULE_PATH).apply()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": api},
        check=True,
        capture_output=True,
    )


async def measure(server: Server, api: str, alerts: int, rate: float) -> dict[str, Any]:
    sender = Sender(rules=1)  # every alert named Alert0: the one rule admits each instance
    async with httpx.AsyncClient(timeout=30) as http:
        began = time.perf_counter()
        for i in range(alerts):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            body = json.loads(sender.webhook(1)[0])
            alert = body["alerts"][0]
            alert.update(status="firing", endsAt="0001-01-01T00:00:00Z")
            alert["labels"].update(alertname="Alert0", instance=f"host-{i}")
            response = await http.post(
                f"{server.url}/webhook/alertmanager",
                json=body,
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200
        deadline = time.monotonic() + 120
        while True:
            rows = (
                await http.get(f"{server.url}/api/v1/decisions", params={"limit": 1000})
            ).json()["decisions"]
            admitted = [d for d in rows if d["verdict"] == "admitted"]
            if len(admitted) == alerts and all(d["flow_run_id"] for d in admitted):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(admitted)} admitted, not all with a flow run")
            await asyncio.sleep(0.5)
        runs: list[dict[str, Any]] = []
        while True:  # Prefect pages at 200
            page = await http.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"tags": {"all_": ["responder"]}}, "offset": len(runs)},
            )
            page.raise_for_status()
            runs.extend(page.json())
            if not page.json():
                break
    created = {r["id"]: datetime.fromisoformat(r["created"]).timestamp() for r in runs}
    latencies = [created[d["flow_run_id"]] - d["created_at"] for d in admitted]
    return {
        "scenario": "dispatch",
        "alerts": alerts,
        "rate": rate,
        "flow_runs": len(runs),
        "one_run_per_decision": len(runs) == alerts
        and {d["flow_run_id"] for d in admitted} == set(created),
        "created_p50_ms": 1000 * _pct(latencies, 0.5),
        "created_p99_ms": 1000 * _pct(latencies, 0.99),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for _ in range(args.repeat):
        await _fresh_database(PREFECT_DB)
        with tempfile.TemporaryDirectory(prefix="responder-dispatch-") as tmp:
            prefect, api = start_prefect(Path(tmp))
            try:
                register_deployments(api)
                server = Server(Path(tmp), rules=1, database_url=None, prefect_api_url=api)
                try:
                    await server.wait_ready()
                    result = await measure(server, api, args.alerts, args.rate)
                finally:
                    server.stop()
            finally:
                prefect.terminate()
                prefect.wait(30)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    for key in ("created_p50_ms", "created_p99_ms"):
        print(key, round(statistics.median(r[key] for r in results), 1))
    if not all(r["one_run_per_decision"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
