"""Helpers the tests share: paths, the captured Alertmanager payloads, settings, ports, waiting.

Fixtures stay in conftest.py; plain functions and constants live here, so that a test imports
what it uses from a module and pytest's conftest stays about fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, MetaData

from responder.intake.app import create_app
from responder.runtime.service import Service
from responder.settings import Settings
from responder.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "alertmanager"
POSTGRES_URL = os.environ.get(
    "RESPONDER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def fixture_body(name: str) -> bytes:
    """The exact bytes Alertmanager 0.25 sent, from tests/fixtures/alertmanager."""
    return (FIXTURES / f"{name}.json").read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads(fixture_body(name))  # type: ignore[no-any-return]


def all_fixture_names() -> list[str]:
    index = json.loads((FIXTURES / "index.json").read_text())
    return sorted(index)


def make_settings(tmp_path: Path, rules_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "rules_dir": rules_dir,
        "rule_vars": {"service_control_url": "http://127.0.0.1:9"},
        "engine_idle_seconds": 0.01,
        "poll_seconds": 0.5,
        "services_file": tmp_path / "services.yaml",  # absent unless a test writes it
        "reload_check_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


def prefect_post(url: str, body: dict[str, Any], within: float = 30.0) -> httpx.Response:
    """A write to Prefect's API as Prefect's own client makes it: its busy answer (503: on
    SQLite, another writer committed between the request's read and its write, and nothing
    was written) is asked again, for up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        response = httpx.post(url, json=body, timeout=30)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def reset_postgres() -> None:
    """Drop every table in the test database so each test starts empty: Responder's, and
    any a branch with another schema left there (a test database is shared by whoever
    points at it)."""
    store = Store(POSTGRES_URL)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(_drop_every_table)
    finally:
        await store.close()


def postgres_database(name: str) -> contextlib.AbstractContextManager[str]:
    """A new, empty database `name` on the test PostgreSQL server, dropped afterwards; its
    asyncpg URL (for what keeps its own tables apart, such as a Prefect server)."""
    from bench.first_action import fresh_database

    return fresh_database(POSTGRES_URL, name)


def _drop_every_table(conn: Connection) -> None:
    tables = MetaData()
    tables.reflect(conn)
    tables.drop_all(conn)


async def wait_for(predicate: Any, timeout: float = 30.0, every: float = 0.1) -> Any:
    """Await an async predicate until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(every)


def damage_tables(database: Path, tables: list[str]) -> None:
    """Write garbage over the root pages of these tables in a real SQLite file, after a
    checkpoint has moved every committed page from the write-ahead log into it."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        roots = [
            int(db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (t,)).fetchone()[0])
            for t in tables
        ]
    with database.open("r+b") as file:
        for root in roots:
            file.seek((root - 1) * page_size)
            file.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def app_client(service: Service, base_url: str = "http://test") -> httpx.AsyncClient:
    """A client of the service's real HTTP app, called in process (no socket)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url=base_url
    )
