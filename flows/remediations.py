"""Remediation flows: each acts, then verifies that the target state holds."""

from __future__ import annotations

import time
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import AnyHttpUrl, Field, StringConstraints

from flows.operations import HttpRequest, http_request

# A host is a DNS name or an address with an optional port, never shell or path syntax.
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.\-:\[\]]{0,252})$")]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$")]


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
) -> str:
    """Ask a service's control endpoint to restart it, then poll its health endpoint.

    Parameters are validated by Prefect before the first step, so a host that is not a
    hostname fails the run before anything is touched.
    """
    logger = get_run_logger()
    http_request(
        HttpRequest(method="POST", url=restart_url, json_body={"host": host, "service": service})
    )
    deadline = time.monotonic() + verify_within_seconds
    check = HttpRequest(method="GET", url=health_url, expected_status=[200])
    while True:
        try:
            http_request.with_options(retries=0)(check)
            logger.info("%s on %s is healthy again", service, host)
            return f"{service} on {host} restarted and healthy"
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise NotRecovered(
                    f"{service} on {host} not healthy within {verify_within_seconds}s: {exc}"
                ) from exc
            time.sleep(verify_every_seconds)
