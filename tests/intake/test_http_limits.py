"""Slow and numerous clients (slowloris) against Responder's real HTTP server (`_http_server`,
what `serve` and `up` run) on a real socket: heads that trickle in are cut off, connections
beyond the cap are closed, and /healthz keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from responder.intake import http_limits
from responder.runtime.service import Service
from tests import servers
from tests.helpers import free_port, make_settings


@pytest.fixture
async def base_url(tmp_path: Path, rules_dir: Path) -> AsyncIterator[str]:
    settings = make_settings(tmp_path, rules_dir, port=free_port())
    server, task = await servers.serve_in_process(settings, Service(settings))
    yield settings.base_url
    server.should_exit = True
    await task


async def trickle(base_url: str, stop: asyncio.Event) -> float | None:
    """Send a request head a header every 0.2 s; seconds until the server closed it (None if
    it never did before `stop`)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                    return time.monotonic() - started
        return None
    except OSError:  # reset by the server
        return time.monotonic() - started
    finally:
        writer.close()


async def test_slow_heads_are_closed_and_health_still_answers(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_limits, "HEADER_TIMEOUT_SECONDS", 1.0)
    stop = asyncio.Event()
    slow = [asyncio.create_task(trickle(base_url, stop)) for _ in range(300)]
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(10):
            assert (await client.get(f"{base_url}/healthz")).status_code == 200
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    stop.set()
    closed_after = await asyncio.gather(*slow)
    assert None not in closed_after, f"{closed_after.count(None)} slow heads still open"
    assert max(t for t in closed_after if t is not None) < 4


async def test_a_slow_second_head_on_a_kept_alive_connection_is_closed(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_limits, "HEADER_TIMEOUT_SECONDS", 1.0)
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(4096), 5)).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # the next head, then a header every 0.2 s
    started = time.monotonic()
    closed = False
    while not closed and time.monotonic() - started < 4:  # keep-alive's 5 s is not what ends it
        writer.write(b"X-Slow: 1\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            closed = await asyncio.wait_for(reader.read(1024), 0.2) == b""
    writer.close()
    assert closed, "a slow head on a kept-alive connection was left open"


async def test_connections_beyond_the_cap_are_closed_at_once(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_limits.LimitedHttpProtocol, "cap", 20)
    host, port = base_url.removeprefix("http://").split(":")
    held = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert await asyncio.wait_for(reader.read(1024), 2) == b""  # closed, nothing sent
    writer.close()
    for _, held_writer in held:
        held_writer.close()
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{base_url}/healthz")).status_code == 200


def test_the_cap_is_below_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert http_limits.connection_cap() <= soft - http_limits.RESERVED_DESCRIPTORS or soft < 200


def test_a_flood_of_warnings_is_logged_a_few_times_then_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.flood")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.addFilter(http_limits.RateLimitedLog())
    clock = [0.0]
    monkeypatch.setattr(http_limits.time, "monotonic", lambda: clock[0])
    for _ in range(10_000):
        logger.warning("Invalid HTTP request received.")
    clock[0] += http_limits.LOG_INTERVAL
    logger.warning("Invalid HTTP request received.")
    assert len(records) == http_limits.LOG_BURST + 1
    assert (
        records[-1].getMessage().endswith(f"({10_000 - http_limits.LOG_BURST} like it not logged)")
    )
