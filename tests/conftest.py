"""Shared fixtures: the captured Alertmanager payloads, stores, and real servers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.authoring.demo import DemoService
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


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A copy of the shipped restart rule, so tests exercise what users get."""
    path = tmp_path / "rules"
    path.mkdir()
    shutil.copy(ROOT / "rules" / "restart-service.yaml", path)
    return path


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on each backend: SQLite file, and a clean schema on real PostgreSQL."""
    if request.param == "sqlite":
        s = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    else:
        await reset_postgres()
        s = Store(POSTGRES_URL)
    await s.migrate()
    yield s
    await s.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def reset_postgres() -> None:
    """Drop Responder's tables in the test database so each test starts empty."""
    store = Store(POSTGRES_URL)
    try:
        await store.drop_schema()
    finally:
        await store.close()


@pytest.fixture
def demo_service() -> Iterator[DemoService]:
    """A real HTTP service control API on 127.0.0.1 that counts restarts."""
    service = DemoService().start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """A real, temporary Prefect server (prefect_test_harness) for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        url = PREFECT_API_URL.value()
        assert url
        yield str(url)


@pytest.fixture(scope="session")
def flow_runner(prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`responder serve-flows` against the test server: deployments exist and runs execute."""
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "responder", "serve-flows"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            response = httpx.get(
                f"{prefect_api_url}/deployments/name/restart-service/restart-service"
            )
            if response.status_code == 200:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flow runner did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield prefect_api_url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for(predicate: Any, timeout: float = 30.0, every: float = 0.1) -> Any:
    """Await an async predicate until it returns something truthy, or fail after `timeout`."""
    import asyncio

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
