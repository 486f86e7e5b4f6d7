"""How operations fail, and which failures are worth a retry.

An operation raises a subclass of `OperationFailed` that says whether trying again could help
(the target was unreachable or overloaded) or not (it refused the request). Tasks pass
`retry_if_transient` as their `retry_condition_fn`, so Prefect retries only the former: a
malformed query or a bad matcher fails at once instead of after every retry delay.
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect import State, Task
from prefect.client.schemas.objects import TaskRun


class OperationFailed(Exception):
    """An operation could not do its job; `transient` says whether a retry could help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only an `OperationFailed` that is transient."""
    error = state.data
    return isinstance(error, OperationFailed) and error.transient


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
