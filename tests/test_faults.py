"""Fault tests: kill -9 of Responder in the middle of a storm, on SQLite and PostgreSQL.

The storm is bench/load.py's load generator against a real `responder serve` process. Every
alert acknowledged with 200 before the kill must have a recorded decision once Responder is
back, and no guard key may have been admitted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from responder.store import Store, decisions
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.test_bench import bench


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "postgresql":
        await reset_postgres()
        return POSTGRES_URL
    return None


async def test_kill_9_mid_storm_loses_no_acknowledged_alert(
    tmp_path: Path, database_url: str | None
) -> None:
    load = bench("load")
    server = load.Server(tmp_path, rules=50, database_url=database_url)
    await server.wait_ready()
    sender = load.Sender(rules=50)
    acknowledged: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def send(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            body, _ = sender.webhook(20)
            try:
                response = await http.post(
                    f"{server.url}/webhook/alertmanager",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            except httpx.TransportError:
                return  # the server is gone: what it did not acknowledge is not ours to keep
            if response.status_code == 200:
                acknowledged.extend(json.loads(body)["alerts"])

    async with httpx.AsyncClient(timeout=30) as http:
        senders = [asyncio.create_task(send(http)) for _ in range(8)]
        while len(acknowledged) < 3000:
            await asyncio.sleep(0.05)
        os.kill(server.process.pid, signal.SIGKILL)  # no shutdown, no flush
        server.process.wait(10)
        stop.set()
        await asyncio.gather(*senders)

    restarted = load.Server(tmp_path, rules=50, database_url=database_url)
    try:
        await restarted.wait_ready()
        store = Store(restarted.database_url)
        wanted = {f"{a['fingerprint']}@" for a in acknowledged}

        async def decided() -> set[str]:
            async with store.transaction() as conn:
                rows = await conn.execute(select(decisions.c.incident))
                return {r.incident.split("@")[0] + "@" for r in rows}

        for _ in range(600):
            missing = wanted - await decided()
            if not missing:
                break
            await asyncio.sleep(0.1)
        assert not missing, f"{len(missing)} acknowledged alerts have no decision"
        checks = await load._check(store, 0)
        assert checks["keys_admitted_twice"] == 0
        await store.close()
    finally:
        restarted.stop()
