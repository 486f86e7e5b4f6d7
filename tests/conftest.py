"""Shared fixtures: stores on both backends, the demo target, and real servers (Redis, Prefect).

The plain helpers (paths, payloads, ports, waiting) are in tests/helpers.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from responder.authoring.demo import DemoService
from responder.storage.store import Store
from tests.helpers import POSTGRES_URL, ROOT, free_port, reset_postgres
from tests.servers import serve_flows, wait_for_deployment

# Flows run by these tests (in-process, or by the session's flow runner) have no Responder
# to ask before they act: fencing off (flows.fencing). tests/test_fencing.py runs
# `responder up`, whose runner fences whatever this says.
os.environ["RESPONDER_FENCING"] = "off"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A copy of the shipped restart rule, so tests exercise what users get."""
    path = tmp_path / "rules"
    path.mkdir()
    shutil.copy(ROOT / "rules" / "restart-service.yaml", path)
    return path


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


@pytest.fixture
def demo_service() -> Iterator[DemoService]:
    """A real HTTP service control API on 127.0.0.1 that counts restarts."""
    service = DemoService().start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: RESPONDER_TEST_REDIS_URL, or 127.0.0.1:6379 when it answers, or a
    throw-away `redis-server` (Debian's redis-server, `make system-deps`) on a free port,
    without persistence. Tests use a stream of their own."""
    import redis

    url = os.environ.get("RESPONDER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    with contextlib.suppress(redis.RedisError):
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            client.ping()
            yield url
            return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("no Redis at 127.0.0.1:6379 and no redis-server: run `make system-deps`")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
                    client.ping()
                break
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


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
    with serve_flows(prefect_api_url, log) as process:
        wait_for_deployment(prefect_api_url, "restart-service", process, log, timeout=90)
        yield prefect_api_url
