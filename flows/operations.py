"""Atomic operations: small, typed Prefect tasks that remediation flows are built from."""

from __future__ import annotations

from typing import Any, Literal

import httpx
from prefect import get_run_logger, task
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class HttpRequest(BaseModel):
    """Parameters of the `http.request` operation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = None
    expected_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class HttpResponse(BaseModel):
    """What `http.request` observed; the body is cut to keep run logs small."""

    status_code: int
    body: str
    ok: bool


class UnexpectedStatus(Exception):
    """The target answered with a status the operation did not expect."""


BODY_LIMIT = 4096


@task(
    name="http.request",
    retries=2,
    retry_delay_seconds=[1, 3],
    task_run_name="{request.method} {request.url}",
)
def http_request(request: HttpRequest) -> HttpResponse:
    """Send one HTTP request; fail (and retry) unless the status is expected.

    Header values are never logged: they may carry secrets.
    """
    response = httpx.request(
        request.method,
        str(request.url),
        headers=request.headers,
        json=request.json_body,
        timeout=request.timeout_seconds,
    )
    result = HttpResponse(
        status_code=response.status_code,
        body=response.text[:BODY_LIMIT],
        ok=response.status_code in request.expected_status,
    )
    if not result.ok:
        raise UnexpectedStatus(
            f"{request.method} {request.url} answered {response.status_code}; "
            f"expected one of {request.expected_status}"
        )
    return result


class ApprovalInput(RunInput):
    """What a person answers in the Prefect UI when a remediation asks for approval."""

    approved: bool
    approver: str = Field(min_length=1, max_length=200)
    comment: str = Field("", max_length=2000)


def require_approval(what: str, timeout_seconds: int) -> ApprovalInput:
    """Pause the flow run until a person approves or rejects it in the Prefect UI.

    The run keeps its guard key and mutexes while it waits (Prefect reports it as Paused,
    so its leases are renewed). Without an answer within `timeout_seconds` the run fails.
    """
    get_run_logger().info("waiting for approval: %s", what)
    answer = pause_flow_run(
        wait_for_input=ApprovalInput.with_initial_data(
            description=f"Approve this remediation? {what}", approved=False
        ),
        timeout=timeout_seconds,
        poll_interval=2,
    )
    get_run_logger().info(
        "%s by %s: %s",
        "approved" if answer.approved else "rejected",
        answer.approver,
        answer.comment,
    )
    return answer
