"""Several replicas on one store: exactly one leads the engine loop; another takes over."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from responder.runtime.service import Service
from tests.helpers import (
    POSTGRES_URL,
    app_client,
    fixture_json,
    make_settings,
    reset_postgres,
    wait_for,
)

Replica = tuple[Service, httpx.AsyncClient]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, rules_dir: Path
) -> AsyncIterator[Callable[[], Any]]:
    """Start replicas that share one store (and, for SQLite, one data directory)."""
    if request.param == "postgresql":
        await reset_postgres()
    started: list[Replica] = []

    async def start() -> Replica:
        extra = {"database_url": POSTGRES_URL} if request.param == "postgresql" else {}
        settings = make_settings(tmp_path, rules_dir, leader_check_seconds=0.1, **extra)
        service = Service(settings, prefect_api_url=None)
        await service.start()
        client = app_client(service, "http://r")
        started.append((service, client))
        return service, client

    yield start
    for service, client in started:
        await client.aclose()
        await service.stop()


def payload(instance: str) -> bytes:
    body = fixture_json("firing_single_servicedown")
    body["alerts"][0]["labels"]["instance"] = instance
    body["alerts"][0]["fingerprint"] = f"{abs(hash(instance)):x}"[:16]
    return json.dumps(body).encode()


async def post(client: httpx.AsyncClient, instance: str) -> None:
    response = await client.post(
        "/webhook/alertmanager",
        content=payload(instance),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200


async def test_one_leader_and_a_takeover(replicas: Callable[[], Any]) -> None:
    first, _ = await replicas()
    second, second_client = await replicas()
    assert first.leading and not second.leading
    ready = (await second_client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["checks"]["leader"] is False

    # The follower accepts webhooks; the leader decides them, once.
    for _ in range(3):
        await post(second_client, "host-7")

    async def decided(n: int) -> Any:
        rows = await first.store.decisions.recent()
        return rows if len(rows) == n else None

    rows = await wait_for(lambda: decided(3))
    assert sorted(r["verdict"] for r in rows) == ["admitted", "duplicate", "duplicate"]

    # The leader goes away; the follower takes over and carries on.
    await first.stop()

    async def took_over() -> bool:
        return second.leading

    await wait_for(took_over, timeout=10)
    await post(second_client, "host-8")
    rows = await wait_for(lambda: decided(4))
    assert rows[0]["labels"]["instance"] == "host-8"
    assert rows[0]["verdict"] == "admitted"


@pytest.mark.postgres
async def test_a_leader_that_loses_its_connection_steps_down(
    tmp_path: Path, rules_dir: Path
) -> None:
    await reset_postgres()
    settings = make_settings(
        tmp_path, rules_dir, leader_check_seconds=0.1, database_url=POSTGRES_URL
    )
    leader = Service(settings, prefect_api_url=None)
    await leader.start()
    follower = Service(settings.model_copy(), prefect_api_url=None)
    await follower.start()
    try:
        assert leader.leading and not follower.leading
        # Kill the leader's lock session, as a network partition or a crash would.
        async with follower.store.engine.connect() as conn:
            await conn.execute(
                text(
                    # This database's lock holders only: the server may be shared.
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            )

        async def swapped() -> bool:
            return follower.leading and not leader.leading

        await wait_for(swapped, timeout=10)
    finally:
        await follower.stop()
        await leader.stop()
