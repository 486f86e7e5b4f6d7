"""Responder's client of Prefect's API: Prefect's own client, with a busy answer retried soon.

Prefect's server answers 503 to a write it could not commit for a reason that passes: on
SQLite (the embedded default), its one writer was busy, or its snapshot went stale between
the read and the insert. Prefect's client retries a 503 after 2, 4, 8, 16 and 32 s. In a burst
of flow-run creations most of the waiting was these pauses, not the server's work: a run
created at the first or second retry had waited 6 s for nothing.

`BusyRetry` is an httpx transport under Prefect's client: it retries a 503 itself, after
0.05 s and doubling to at most 0.8 s with jitter, for at most `BUSY_RETRY_SECONDS`. Only then
does the answer reach Prefect's own retry loop, which goes on as before. Retrying is as safe
as Prefect's own retry of the same answer: a 503 means the server rolled the request back,
and each creation carries an idempotency key besides. A server that stays busy (its database
down) sees about one request a second from each call in flight, where Prefect's own retry
would send one every few seconds.

The transport is given to Prefect's client through its public `httpx_settings`; the client
is otherwise what `PrefectClient(api_url)` builds: the same TLS context, connection limits
and HTTP/2 setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from responder import metrics

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

BUSY = 503
# For each API URL, Prefect's settings it was set in and the result (`using_api`).
_WITH_API_URL: dict[str, tuple[Any, Any]] = {}
# How long a busy answer is retried here before Prefect's client gets it.
BUSY_RETRY_SECONDS = 10.0
FIRST_DELAY = 0.05
MAX_DELAY = 0.8


class BusyRetry(httpx.AsyncBaseTransport):
    """Retries Prefect's busy answer (503) soon, for at most `within` seconds."""

    def __init__(self, inner: httpx.AsyncBaseTransport, within: float = BUSY_RETRY_SECONDS):
        self._inner = inner
        self._within = within

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self._within
        delay = FIRST_DELAY
        while True:
            response = await self._inner.handle_async_request(request)
            pause = delay * random.uniform(1.0, 1.5)
            if response.status_code != BUSY or time.monotonic() + pause > deadline:
                return response
            await response.aclose()
            metrics.PREFECT_BUSY_RETRIES.inc()
            await asyncio.sleep(pause)
            delay = min(delay * 2, MAX_DELAY)

    async def aclose(self) -> None:
        await self._inner.aclose()


def import_prefect_client() -> None:
    """Import what the dispatcher uses of Prefect: its client and its events' clients."""
    for module in ("prefect.client.orchestration", "prefect.events.clients"):
        importlib.import_module(module)


def prefect_tls_context() -> ssl.SSLContext:
    """The TLS context Prefect's client builds for itself (`PrefectClient.__init__`), from the
    same settings: unverified if PREFECT_API_TLS_INSECURE_SKIP_VERIFY, else verified against
    PREFECT_API_SSL_CERT_FILE (or certifi's bundle)."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    if PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


def prefect_client(api_url: str, within: float = BUSY_RETRY_SECONDS) -> PrefectClient:
    """Prefect's client of `api_url`, its busy answers retried soon (`BusyRetry`)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import PREFECT_API_ENABLE_HTTP2

    # Given a transport, httpx ignores its own TLS, limits and HTTP/2 arguments: they go to
    # the transport, as Prefect's client sets them.
    inner = httpx.AsyncHTTPTransport(
        verify=prefect_tls_context(),
        http2=PREFECT_API_ENABLE_HTTP2.value(),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=25),
    )
    return PrefectClient(api_url, httpx_settings={"transport": BusyRetry(inner, within)})


@contextlib.contextmanager
def using_api(api_url: str) -> Iterator[None]:
    """Prefect's current settings with PREFECT_API_URL set to `api_url`, in this context only:
    for what Prefect finds through its settings rather than a client (its events worker).

    `prefect.settings.temporary_settings` would do the same but builds the settings anew each
    time (every environment variable and profile read again, about 50 ms of CPU): in a burst,
    that was half of Responder's CPU. They are built once here, for each URL."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL

    context = prefect.context.get_settings_context()
    base = context.settings
    cached = _WITH_API_URL.get(api_url)
    if cached is None or cached[0] is not base:  # the base changes only in tests
        cached = _WITH_API_URL[api_url] = (
            base,
            base.copy_with_update(updates={PREFECT_API_URL: api_url}),
        )
    with prefect.context.SettingsContext(profile=context.profile, settings=cached[1]):
        yield
