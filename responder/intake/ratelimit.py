"""Per-client rate limits on the intake endpoints: a token bucket for each client.

A client is its peer address, with IPv6 addresses grouped by /64 (one host or site), because
the credentials do not tell senders apart: every Alertmanager presents the same webhook token.
Behind a reverse proxy the peer is the proxy, unless `trusted_proxies` lets uvicorn take the
client from the proxy's X-Forwarded-For.

Routes ask for their limit as a FastAPI dependency (`throttle`), after their credentials.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from responder import metrics
from responder.intake.errors import Refused

if TYPE_CHECKING:
    from responder.settings import Settings


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimit:
    """Admits `rate` requests per second per client on average, in bursts of up to `burst`.

    It remembers at most `max_clients` clients and forgets the one idle longest first. A
    forgotten client comes back with a full bucket, as it would have after idling anyway, so a
    flood of new addresses costs bounded memory and never refuses anyone who would be admitted.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently seen first

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimit | None:
        """The limit these settings ask for; None when they set none."""
        if settings.rate_limit_per_client <= 0:
            return None
        return cls(
            settings.rate_limit_per_client,
            settings.rate_limit_burst,
            max_clients=settings.rate_limit_clients,
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, client: str) -> float:
        """Take one request's token: 0.0 when admitted, else the seconds until one is free."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
            self._buckets.move_to_end(client)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


NOT_AN_ADDRESS = "unknown"


def client_of(host: str | None) -> str:
    """The client a peer address counts as: the address itself, or its IPv6 /64.

    Whatever is not an IP address (a unix socket, an X-Forwarded-For value that a trusted
    proxy passed on unchecked) is one client: rotating such strings gets no fresh bucket.
    """
    if not host:
        return NOT_AN_ADDRESS
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return NOT_AN_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def throttle(endpoint: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency answering 429 when this request's client has used up its rate at the
    app's `RateLimit` (none on `app.state.rate_limit`: no limit). Declare it after the
    credentials, so a stranger cannot spend a real sender's bucket (a 401 costs little)."""

    async def throttled(request: Request) -> None:
        limit: RateLimit | None = request.app.state.rate_limit
        if limit is None:
            return
        wait = limit.admit(client_of(request.client.host if request.client else None))
        if not wait:
            return
        metrics.RATE_LIMITED.labels(endpoint=endpoint).inc()
        raise Refused(
            429,
            f"too many requests from this client: at most {limit.rate:g} per second "
            f"in bursts of {limit.burst}",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            retry_after_seconds=math.ceil(wait * 1000) / 1000,
        )

    return throttled
