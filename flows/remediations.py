"""Remediation flows: each acts, then verifies that the target state holds."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, Literal

import httpx
from prefect import State, flow, get_run_logger
from prefect.states import Cancelled
from pydantic import AnyHttpUrl, Field, StringConstraints

from flows.operations import (
    ApprovalInput,
    HttpRequest,
    UnexpectedStatus,
    http_request,
    require_approval,
)

# A host is a DNS name or an address with an optional port, never shell or path syntax.
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.\-:\[\]]{0,252})$")]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$")]


HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
# Only variables meant for flows: the runner also inherits Responder's own secrets.
EnvName = Annotated[str, StringConstraints(pattern=r"^FLOW_SECRET_[A-Z0-9_]{1,100}$")]


class MissingSecret(Exception):
    """An environment variable named in `headers_from_env` is not set on the worker."""


def secret_headers(names: dict[str, str] | None) -> dict[str, str]:
    """Header values read from the worker's environment; fails before anything is sent."""
    headers = {}
    for header, variable in (names or {}).items():
        value = os.environ.get(variable)
        if value is None:
            raise MissingSecret(f"header {header}: environment variable {variable} is not set")
        headers[header] = value
    return headers


def rejected(answer: ApprovalInput) -> State:
    """The final state of a run a person rejected: Cancelled, saying who and why."""
    return Cancelled(message=f"rejected by {answer.approver}: {answer.comment or '-'}")


class NotRecovered(Exception):
    """The remediation acted, but the target did not reach its healthy state in time."""


@flow(name="restart-service", flow_run_name="restart-service {service}@{host}", log_prints=False)
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
        except (UnexpectedStatus, httpx.HTTPError) as exc:
            if time.monotonic() >= deadline:
                raise NotRecovered(f"{what} not healthy within {within}s: {exc}") from exc
        time.sleep(every)


@flow(name="http-call", flow_run_name="http-call {method} {url}")
def http_call(
    url: AnyHttpUrl,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST",
    json_body: dict[str, Any] | None = None,
    expected_status: list[int] | None = None,
    verify_url: AnyHttpUrl | None = None,
    verify_within_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0,
    verify_every_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0,
    headers_from_env: dict[HeaderName, EnvName] | None = None,
    approval_required: bool = False,
    approval_timeout_seconds: Annotated[int, Field(ge=10, le=86400)] = 3600,
) -> str | State:
    """Call another system's API (a deploy tool's rollback, a pager), then optionally verify.

    With `verify_url`, the flow polls it until it answers 200 or the deadline passes.
    Secrets go in `headers_from_env` as header → the *name* of an environment variable on
    the worker, which must start with FLOW_SECRET_; the value is read when the run starts
    and never appears in parameters, the UI or logs.
    """
    headers = secret_headers(headers_from_env)
    if approval_required:
        answer = require_approval(f"{method} {url}", approval_timeout_seconds)
        if not answer.approved:
            return rejected(answer)
    request = HttpRequest(method=method, url=url, json_body=json_body, headers=headers)
    if expected_status is not None:
        request = request.model_copy(update={"expected_status": expected_status})
    response = http_request(request)
    if verify_url is None:
        return f"{method} {url} answered {response.status_code}"
    _verify_healthy(verify_url, verify_within_seconds, verify_every_seconds, f"{url}")
    return f"{method} {url} answered {response.status_code}; {verify_url} is healthy"
