"""`http.request`: one HTTP call to another system's API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import task
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from flows.operations import operation
from flows.operations.failures import (
    OperationFailed,
    call_api,
    retry_if_transient,
    transient_status,
)
from flows.secrets import SecretName, secret_headers

HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
BODY_LIMIT = 4096


class HttpRequest(BaseModel):
    """Parameters of the `http.request` operation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: AnyHttpUrl
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, description="Plain headers; never put a secret here."
    )
    headers_from_secrets: dict[HeaderName, SecretName] = Field(
        default_factory=dict,
        description="Header → secret name (FLOW_SECRET_* or prefect:<block>), read at run time.",
    )
    json_body: Any = None
    expected_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class HttpResponse(BaseModel):
    """What `http.request` observed; the body is cut to keep run logs small."""

    status_code: int
    body: str
    ok: bool


class HttpFailed(OperationFailed):
    """The request could not be sent, or was answered with an unexpected status."""


class UnexpectedStatus(HttpFailed):
    """The target answered with a status the operation did not expect."""


@operation(risk="medium", tags=["http"])
@task(
    name="http.request",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_if_transient,
    task_run_name="{request.method} {request.url}",
)
def http_request(request: HttpRequest) -> HttpResponse:
    """Send one HTTP request; fail unless the status is expected.

    Only failures another try could fix are retried: no connection, a timeout, 5xx, 408,
    429. A refusal (4xx) or a missing secret fails at once. Secret headers are read from
    their secret names when the request is sent; header values are never logged.
    """
    response = call_api(
        HttpFailed,
        request.method,
        str(request.url),
        headers={**request.headers, **secret_headers(request.headers_from_secrets)},
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
            f"expected one of {request.expected_status}",
            transient=transient_status(response.status_code),
        )
    return result
