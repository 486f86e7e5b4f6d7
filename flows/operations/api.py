"""One call to another system's HTTP API, and what its failure means.

A transport failure (no connection, no answer) is always transient: the same request may get
through a moment later. Whether an HTTP status is transient depends on the API, so callers
decide, most with `transient_status`.
"""

from __future__ import annotations

from typing import Any

import httpx

from flows.errors import OperationFailed


def transient_status(status_code: int) -> bool:
    """Whether an HTTP status says "try again later" rather than "no"."""
    return status_code >= 500 or status_code in (408, 429)


def call_api(
    error: type[OperationFailed], method: str, url: str, *, timeout: float, **kwargs: Any
) -> httpx.Response:
    """Send one request to another system's API; a transport failure raises `error`, transient.

    Any HTTP answer is returned as it is: the caller knows what the API's errors look like.
    """
    try:
        return httpx.request(method, url, timeout=timeout, **kwargs)
    except httpx.TransportError as exc:
        raise error(f"{method} {url} failed: {type(exc).__name__}: {exc}", transient=True) from exc
