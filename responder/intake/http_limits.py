"""Limits of the HTTP server against slow and numerous clients (slowloris).

uvicorn reads a request's head for as long as the client takes, and accepts connections
until the process runs out of file descriptors. Here, on top of its httptools protocol (a C
parser: about 6 % less CPU per alert in a storm than its h11 protocol, pure Python):

- a request's head (request line and headers) must arrive within `HEADER_TIMEOUT_SECONDS`
  of the connection, or of its first byte on a kept-alive connection; else it is closed;
- an idle kept-alive connection is closed after `KEEP_ALIVE_SECONDS` (uvicorn's own timer);
- connections beyond `connection_cap()`, which keeps descriptors free for the store and
  Prefect, are closed as soon as they are accepted;
- the warnings a flood of bad connections causes are logged at most a few times a second.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
# Descriptors kept for everything but client connections: the store's pool, Prefect's
# client, rule files, logs.
RESERVED_DESCRIPTORS = 128
LOG_BURST = 10  # warnings per logger and LOG_INTERVAL before the rest are counted, not shown
LOG_INTERVAL = 10.0

log = logging.getLogger("uvicorn.error")


def connection_cap() -> int:
    """How many client connections may be open at once: below the descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, min(soft - RESERVED_DESCRIPTORS, soft * 3 // 4))


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's head and a
    connection cap."""

    cap = connection_cap()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.cap:
            log.warning("%d connections open, the cap: closing a new one", len(self.connections))
            transport.close()
            return
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_head()  # a head has begun (on a kept-alive connection: its first byte)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.warning(
                "closing a connection whose request head took over %ss", HEADER_TIMEOUT_SECONDS
            )
            self.transport.close()


class RateLimitedLog(logging.Filter):
    """Lets `LOG_BURST` records per logger through each `LOG_INTERVAL`; the first record of
    the next interval says how many were dropped. Critical records always pass."""

    def __init__(self) -> None:
        super().__init__()
        self._window: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        now = time.monotonic()
        started, count = self._window.get(record.name, (now, 0))
        if now - started >= LOG_INTERVAL:
            if count > LOG_BURST:
                record.msg = f"{record.msg} ({count - LOG_BURST} like it not logged)"
            started, count = now, 0
        self._window[record.name] = (started, count + 1)
        return count < LOG_BURST


def uvicorn_options() -> dict[str, Any]:
    """What `uvicorn.Config` needs for these limits; installs the log filter once."""
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitedLog) for f in logger.filters):
            logger.addFilter(RateLimitedLog())
    return {"http": LimitedHttpProtocol, "timeout_keep_alive": KEEP_ALIVE_SECONDS}
