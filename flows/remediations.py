"""Remediation flows: each acts, then verifies that the target state holds."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from prefect import State, flow, get_run_logger
from pydantic import AnyHttpUrl, Field

from flows.errors import FlowError
from flows.fencing import fenced
from flows.operations.approval import rejected, require_approval
from flows.operations.http import HttpFailed, HttpRequest, http_request
from flows.secrets import SecretName, check_secrets
from flows.types import HeaderName, Host, ServiceName


class NotRecovered(FlowError):
    """The remediation acted, but the target did not reach its healthy state in time."""


# Runs are named by the dispatcher when it creates them (responder/story.py); a
# flow_run_name here would rename them once they start.
@flow(name="restart-service", log_prints=False)
@fenced
def restart_service(
    host: Host,
    service: ServiceName,
    restart_url: AnyHttpUrl,
    health_url: AnyHttpUrl,
    verify_within_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0,
    verify_every_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0,
    approval_required: bool = False,
    approval_timeout_seconds: Annotated[int, Field(ge=10, le=86400)] = 3600,
) -> str | State:
    """Ask a service's control endpoint to restart it, then poll its health endpoint.

    Parameters are validated by Prefect before the first step, so a host that is not a
    hostname fails the run before anything is touched.
    """
    logger = get_run_logger()
    if approval_required:
        answer = require_approval(f"restart {service} on {host}", approval_timeout_seconds)
        if not answer.approved:
            return rejected(answer)
    http_request(
        HttpRequest(method="POST", url=restart_url, json_body={"host": host, "service": service})
    )
    _verify_healthy(health_url, verify_within_seconds, verify_every_seconds, f"{service} on {host}")
    logger.info("%s on %s is healthy again", service, host)
    return f"{service} on {host} restarted and healthy"


def _verify_healthy(url: AnyHttpUrl, within: float, every: float, what: str) -> None:
    """Poll `url` until it answers 200; raise `NotRecovered` after `within` seconds."""
    deadline = time.monotonic() + within
    check = HttpRequest(method="GET", url=url, expected_status=[200])
    while True:
        try:
            http_request.with_options(retries=0)(check)
            return
        except HttpFailed as exc:
            if time.monotonic() >= deadline:
                raise NotRecovered(f"{what} not healthy within {within}s: {exc}") from exc
        time.sleep(every)


@flow(name="http-call")
@fenced
def http_call(
    url: AnyHttpUrl,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST",
    json_body: dict[str, Any] | None = None,
    expected_status: list[int] | None = None,
    verify_url: AnyHttpUrl | None = None,
    verify_within_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0,
    verify_every_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0,
    headers_from_env: dict[HeaderName, SecretName] | None = None,
    approval_required: bool = False,
    approval_timeout_seconds: Annotated[int, Field(ge=10, le=86400)] = 3600,
) -> str | State:
    """Call another system's API (a deploy tool's rollback, a pager), then optionally verify.

    With `verify_url`, the flow polls it until it answers 200 or the deadline passes.
    Secrets go in `headers_from_env` as header → the *name* of a secret: an environment
    variable on the worker starting with FLOW_SECRET_, or `prefect:<Secret block>`. The value
    is read when the request is sent and never appears in parameters, the UI or logs.
    """
    request = HttpRequest(
        method=method,
        url=url,
        json_body=json_body,
        headers_from_secrets=headers_from_env or {},
        **({} if expected_status is None else {"expected_status": expected_status}),
    )
    check_secrets(request.headers_from_secrets.values())
    if approval_required:
        answer = require_approval(f"{method} {url}", approval_timeout_seconds)
        if not answer.approved:
            return rejected(answer)
    response = http_request(request)
    if verify_url is None:
        return f"{method} {url} answered {response.status_code}"
    _verify_healthy(verify_url, verify_within_seconds, verify_every_seconds, f"{url}")
    return f"{method} {url} answered {response.status_code}; {verify_url} is healthy"
