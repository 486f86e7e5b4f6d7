"""`http.request`: one HTTP call to another system's API."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
import urllib.parse
import uuid
from typing import Any, Literal

import httpx
from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from flows.errors import OperationFailed
from flows.operations import operation
from flows.operations.api import transient_status
from flows.secrets import SecretName, secret_headers
from flows.types import HeaderName

BODY_LIMIT = 4096
# Methods that only read: repeating one cannot act twice (RFC 9110 "safe" methods).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDEMPOTENCY_HEADER = "Idempotency-Key"


class HttpRequest(BaseModel):
    """Parameters of the `http.request` operation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
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
    idempotent: bool = Field(
        False,
        description=(
            "The target does the action once however often it gets this request (or honours "
            "the Idempotency-Key header): a timeout or a 5xx may then be retried. Reads "
            "(GET, HEAD, OPTIONS) always may."
        ),
    )

    @property
    def retry_safe(self) -> bool:
        """Whether sending this request again cannot repeat an action."""
        return self.method in READ_METHODS or self.idempotent


class HttpResponse(BaseModel):
    """What `http.request` observed; the body is cut to keep run logs small."""

    status_code: int
    body: str
    ok: bool


class HttpFailed(OperationFailed):
    """The request could not be sent, or was answered with an unexpected status."""


class UnexpectedStatus(HttpFailed):
    """The target answered with a status the operation did not expect."""


class OutcomeUnknown(HttpFailed):
    """A request that acts was sent but not answered: it may or may not have acted."""


@operation(
    "http.request",
    risk="medium",
    tags=["http"],
    retries=2,
    retry_delays=(1, 3),
    run_name="{request.method} {request.url}",
    reads=lambda request: request.method in READ_METHODS,
)
def http_request(request: HttpRequest) -> HttpResponse:
    """Send one HTTP request; fail unless the status is expected.

    A request is sent again (by the task's retries) only when that cannot act twice: a read,
    a request declared `idempotent`, or one that never reached the target (no connection).
    A request that acts and was sent but not answered in time fails as "outcome unknown",
    never retried: the flow must verify before it acts again. Each such request carries an
    `Idempotency-Key` (the decision's, else the flow run's, and the request's digest), the same
    on every retry, so that a target which honours it acts once. A refusal (4xx) or a missing
    secret fails at once. Header values are read when the request is sent and never logged.
    """
    what = f"{request.method} {shown_url(str(request.url))}"  # logs and errors mask secrets
    headers = {**request.headers, **secret_headers(request.headers_from_secrets)}
    if request.method not in READ_METHODS and IDEMPOTENCY_HEADER.lower() not in {
        name.lower() for name in headers
    }:
        headers[IDEMPOTENCY_HEADER] = idempotency_key(request)
    logger = _logger()
    started = time.monotonic()
    try:
        response = shared_client().request(
            request.method,
            str(request.url),
            headers=headers,
            json=request.json_body,
            timeout=request.timeout_seconds,
        )
    except httpx.TransportError as exc:
        elapsed = (time.monotonic() - started) * 1000
        logger.warning("%s: no answer after %.0f ms (%s)", what, elapsed, type(exc).__name__)
        raise _failure(request, what, exc) from exc
    elapsed = (time.monotonic() - started) * 1000
    level = logging.INFO if response.status_code in request.expected_status else logging.WARNING
    logger.log(level, "%s → %d in %.0f ms", what, response.status_code, elapsed)
    result = HttpResponse(
        status_code=response.status_code,
        body=response.text[:BODY_LIMIT],
        ok=response.status_code in request.expected_status,
    )
    if not result.ok:
        raise _unexpected(request, what, response.status_code)
    return result


@functools.cache
def shared_client() -> httpx.Client:
    """This process's client of `http.request`: building one loads the CA bundle (about 30 ms
    on a small machine, more than a loopback call), so a run's calls share it (`responder
    up`'s fork server builds it before forking its runs). No connection is kept between
    calls: each request opens its own, as with a client of its own (a target that was just
    restarted has closed the old one), and none is ever inherited by a fork."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def _unexpected(request: HttpRequest, what: str, status_code: int) -> UnexpectedStatus:
    """A status not expected: retried when it says "later" and a retry cannot act twice."""
    transient = transient_status(status_code)
    return UnexpectedStatus(
        f"{what} answered {status_code}; expected one of {request.expected_status}"
        + (
            "; not retried: the request is not idempotent"
            if transient and not request.retry_safe
            else ""
        ),
        transient=transient and request.retry_safe,
    )


def _failure(request: HttpRequest, what: str, exc: httpx.TransportError) -> HttpFailed:
    """A request that got no answer: retried only when that cannot act twice."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        # Nothing was sent: trying again cannot act twice.
        return HttpFailed(f"{what} failed: {type(exc).__name__}: {exc}", transient=True)
    if request.retry_safe:
        return HttpFailed(f"{what} failed: {type(exc).__name__}: {exc}", transient=True)
    return OutcomeUnknown(
        f"{what}: outcome unknown ({type(exc).__name__} after the request was sent, "
        f"timeout {request.timeout_seconds}s); not retried, as the target may have acted: "
        "verify before acting again",
        transient=False,
    )


_SECRET_QUERY = re.compile(r"token|key|secret|pass|auth|sig|credential", re.IGNORECASE)


def shown_url(url: str) -> str:
    """The URL as logs may show it: its user and password, and query values whose names
    look like secrets (token, key, signature, ...), masked."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:  # a user name can be a token too
        netloc = "***@" + netloc.rpartition("@")[2]
    query = urllib.parse.urlencode(
        [
            (name, "***" if _SECRET_QUERY.search(name) else value)
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow or task run
        return logging.getLogger(__name__)


def idempotency_key(request: HttpRequest) -> str:
    """The decision's flow run key (else the flow run's id), and this request's digest.

    Stable across the task's retries and the flow run's, so a target that honours it acts
    once; the digest keeps two different requests of one run apart.
    """
    flow_context, task_context = FlowRunContext.get(), TaskRunContext.get()
    run = flow_context.flow_run if flow_context else None
    if run is not None:
        owner = run.idempotency_key or f"flow-run:{run.id}"
    else:  # called outside a flow: the task run (same on its retries), else this call
        owner = f"task-run:{task_context.task_run.id if task_context else uuid.uuid4()}"
    body = json.dumps(request.json_body, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{request.method} {request.url} {body}".encode()).hexdigest()
    return f"{owner}:{digest[:16]}"
