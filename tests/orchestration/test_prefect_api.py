"""Responder's Prefect client retries a busy answer (503) soon, then leaves it to Prefect's.

The busy answer comes from a loopback HTTP server that answers as Prefect's server does when
its SQLite writer is busy (503, `{"exception_message": "Service Unavailable"}`): a real
Prefect server cannot be made busy on cue. Prefect's real client sends the requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prometheus_client import REGISTRY

from responder.orchestration.prefect_api import BusyRetry, prefect_client
from tests.servers import QuietHandler, http_server


def busy_retries() -> float:
    return REGISTRY.get_sample_value("responder_prefect_busy_retries_total") or 0.0


BUSY_BODY = json.dumps({"exception_message": "Service Unavailable"}).encode()


class BusyServer:
    """Answers `busy` requests with Prefect's 503, then 200 (or `status` forever)."""

    def __init__(self, busy: int, status: int = 200) -> None:
        self.busy = busy
        self.status = status
        self.seen: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def handler(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                with server._lock:
                    server.seen.append((self.path, self.rfile.read(length)))
                    busy = len(server.seen) <= server.busy
                if busy:
                    self.reply(503, BUSY_BODY, "application/json")
                else:
                    self.reply(server.status, b'"hello"', "application/json")

            do_GET = do_POST = answer

        return Handler


@pytest.fixture
def busy_twice() -> Iterator[tuple[BusyServer, str]]:
    server = BusyServer(busy=2)
    with http_server(server.handler()) as url:
        yield server, url


async def test_a_busy_answer_is_retried_within_a_second_not_after_prefects_2_s(
    busy_twice: tuple[BusyServer, str],
) -> None:
    server, url = busy_twice
    started = time.monotonic()
    async with prefect_client(f"{url}/api") as client:
        response = await client.hello()
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert [path for path, _ in server.seen] == ["/api/hello"] * 3
    # Prefect's own retry waits 2 s (jitter aside, at least 1.6 s) before its first retry.
    assert elapsed < 1.5


async def test_a_post_is_sent_again_with_its_body() -> None:
    server = BusyServer(busy=2)
    before = busy_retries()
    with http_server(server.handler()) as url:
        transport = BusyRetry(httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            response = await client.post("/api/flow_runs/", json={"name": "restart web-1"})
    assert response.status_code == 200
    assert busy_retries() - before == 2  # in /metrics
    assert [body for _, body in server.seen] == [b'{"name":"restart web-1"}'] * 3


async def test_a_server_busy_for_longer_is_left_to_prefects_own_retry() -> None:
    server = BusyServer(busy=10_000)
    with http_server(server.handler()) as url, temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
        started = time.monotonic()
        async with prefect_client(f"{url}/api", within=0.4) as client:
            with pytest.raises(httpx.HTTPStatusError) as raised:
                await client.hello()
    assert raised.value.response.status_code == 503
    assert 2 <= len(server.seen) <= 8
    assert time.monotonic() - started < 5


async def test_other_errors_are_not_retried_here() -> None:
    server = BusyServer(busy=0, status=500)
    before = busy_retries()
    with http_server(server.handler()) as url:
        transport = BusyRetry(httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            response = await client.get("/api/hello")
    assert response.status_code == 500
    assert len(server.seen) == 1
    assert busy_retries() == before


def test_using_api_sets_prefects_api_url_in_its_context_only_built_once() -> None:
    from prefect.settings import PREFECT_API_URL, get_current_settings

    from responder.orchestration.prefect_api import using_api

    before = PREFECT_API_URL.value()
    with using_api("http://127.0.0.1:1/api"):
        assert PREFECT_API_URL.value() == "http://127.0.0.1:1/api"
        first = get_current_settings()
    assert PREFECT_API_URL.value() == before
    with using_api("http://127.0.0.1:1/api"):
        # The same settings object: not built anew (that cost ~50 ms of CPU each time).
        assert get_current_settings() is first
    with using_api("http://127.0.0.1:2/api"):
        assert PREFECT_API_URL.value() == "http://127.0.0.1:2/api"
