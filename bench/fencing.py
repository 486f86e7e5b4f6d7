"""What the fencing check costs a flow run, per step that changes something.

Starts `responder serve` (no Prefect: decisions are admitted and recorded, nothing is
dispatched) on SQLite, and on PostgreSQL when `--postgres URL` is given; sends one alert that
a rule admits, records a flow run for its decision as the dispatcher would, then asks the
fencing question as a flow's step does (`flows.fencing.ask`: one request on the process's
client, one store transaction) `--checks` times, and prints the first check (a new client and
connection, as a flow run's first mutating step pays), then p50, p99 and max of the others.

    python bench/fencing.py --checks 2000 [--postgres postgresql+asyncpg://…/db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision_path import _reset  # noqa: E402
from bench.load import Server, _pct  # noqa: E402
from flows.fencing import ask  # noqa: E402
from responder.storage.schema import decisions  # noqa: E402
from responder.storage.store import Store  # noqa: E402


def webhook() -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "Alert0", "instance": "host-1", "severity": "critical"},
        "annotations": {},
        "startsAt": "2026-11-26T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "00000000000000f1",
    }
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "responder",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [alert],
        }
    ).encode()


async def admitted_run(server: Server) -> tuple[int, str]:
    """The admitted decision of the one alert, with a flow run recorded for it."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.url}/webhook/alertmanager",
            content=webhook(),
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
    store = Store(server.database_url)
    try:
        for _ in range(200):
            async with store.transaction() as conn:
                decision_id = await conn.scalar(
                    select(decisions.c.id).where(decisions.c.verdict == "admitted")
                )
            if decision_id is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the alert was not admitted")
        flow_run_id = str(uuid.uuid4())
        await store.decisions.set_flow_run(decision_id, flow_run_id)
        return int(decision_id), flow_run_id
    finally:
        await store.close()


def measure(url: str, decision_id: int, flow_run_id: str, checks: int) -> list[float]:
    """The first check (a new client and connection), then `checks` more."""
    start = time.perf_counter()
    ask(url, decision_id, flow_run_id, "first")
    seconds = [time.perf_counter() - start]
    for _ in range(checks):
        start = time.perf_counter()
        ask(url, decision_id, flow_run_id, "bench")  # raises unless the run may act
        seconds.append(time.perf_counter() - start)
    return seconds


async def one_backend(name: str, database_url: str | None, checks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if database_url:
            await _reset(database_url)
        server = Server(Path(tmp), rules=1, database_url=database_url)
        try:
            await server.wait_ready()
            decision_id, flow_run_id = await admitted_run(server)
            seconds = await asyncio.to_thread(measure, server.url, decision_id, flow_run_id, checks)
        finally:
            server.stop()
    return {
        "store": name,
        "checks": checks,
        "first_ms": round(seconds[0] * 1000, 2),
        "p50_ms": round(_pct(seconds[1:], 0.50) * 1000, 2),
        "p99_ms": round(_pct(seconds[1:], 0.99) * 1000, 2),
        "max_ms": round(max(seconds[1:]) * 1000, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL to measure on too")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()} Python {platform.python_version()}")
    results = [await one_backend("sqlite", None, args.checks)]
    if args.postgres:
        results.append(await one_backend("postgresql", args.postgres, args.checks))
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
