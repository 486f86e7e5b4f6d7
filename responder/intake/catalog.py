"""The catalog over HTTP: what Responder can do (operations and flows), and starting a
flow by hand through the same guard as rule decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from responder.decision.decisions import Verdict
from responder.events.manual_runs import RunRequest, RunRequestBody
from responder.exceptions import StoreUnavailable
from responder.intake.auth import Operating, Reading, audit
from responder.intake.bodies import json_body
from responder.intake.context import TheService
from responder.intake.errors import Refused, error
from responder.intake.ratelimit import throttle
from responder.intake.views import linked
from responder.orchestration.flow_catalog import flow_names
from responder.runtime.service import Service

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/api/v1/catalog")
async def list_catalog(_who: Reading) -> JSONResponse:
    """Every atomic operation and flow: description, risk level, tags."""
    from responder.orchestration.flow_catalog import catalog

    entries = await asyncio.to_thread(catalog)
    return JSONResponse({"catalog": [entry.summary() for entry in entries]})


@router.get("/api/v1/catalog/{name}")
async def show_catalog_entry(
    _who: Reading, name: str = Path(pattern=r"^[a-z][a-z0-9._-]{0,127}$")
) -> JSONResponse:
    """One operation or flow, with its parameters' JSON Schema."""
    from responder.orchestration.flow_catalog import find

    entry = await asyncio.to_thread(find, name)
    if entry is None:
        return error(404, f"no operation or flow is named {name!r}", name=name)
    return JSONResponse(entry.detail())


_throttle_run_requests = throttle("run-request")


async def _admitted_flow_name(
    request: Request, name: str = Path(pattern=r"^[a-z][a-z0-9-]{0,127}$")
) -> str:
    """The path's flow name, once this client's rate admits another run request.

    A dependency of its own so that FastAPI checks the name before the rate: a request with
    credentials but a malformed name is a 422 and costs no token. Credentials come first:
    declare it after them."""
    await _throttle_run_requests(request)
    return name


@router.post("/api/v1/catalog/flows/{name}/runs")
async def start_run(
    request: Request,
    who: Operating,
    service: TheService,
    name: Annotated[str, Depends(_admitted_flow_name)],
) -> JSONResponse:
    """Start a flow by hand, through the same guard as rule decisions.

    Answers 202 with the decision when the guard admitted it, 409 when it refused
    (with the reason), or 202 `pending` if the engine has not decided within a few
    seconds (the request is committed and will be decided). The requester recorded is
    the operator the credentials name.
    """
    known = flow_names()
    if name not in known:
        return error(404, f"unknown flow {name!r}", flow=name, known=known)
    limit = service.settings.max_body_bytes
    body = await json_body(request, RunRequestBody, "a run request", limit)
    await _check_parameters(name, body)
    declared = body.requested_by
    requester = audit(who, "requests a run of %s: %r", name, body.reason)
    run_request = RunRequest(
        flow=name,
        **{**body.model_dump(), "requested_by": requester},
        declared_by="" if declared in ("", requester) else declared,
    )
    try:
        inbox_id = await service.accept("run-request", run_request.model_dump_json().encode())
    except StoreUnavailable as exc:
        log.error("run request not committed, answering 503: %s", exc)
        return error(503, "store unavailable; retry")
    return await _decided(service, inbox_id)


async def _check_parameters(name: str, body: RunRequestBody) -> None:
    """A 422 naming each parameter that does not fit the flow."""
    from responder.orchestration.flow_catalog import parameter_errors

    errors = await asyncio.to_thread(parameter_errors, name, body.parameters)
    if errors:
        raise Refused(422, f"parameters do not fit flow {name!r}", fields=errors)


async def _decided(service: Service, inbox_id: int) -> JSONResponse:
    """The decision on a committed run request once the engine made it (409 if refused),
    or `pending` when it has not within `run_request_wait_seconds`."""
    deadline = time.monotonic() + service.settings.run_request_wait_seconds
    while time.monotonic() < deadline:
        rows = await service.decisions(limit=1, inbox_id=inbox_id)
        if rows:
            (decision,) = linked(service, rows)
            status = 409 if decision["verdict"] == Verdict.REFUSED else 202
            return JSONResponse({"decision": decision}, status_code=status)
        await asyncio.sleep(0.05)
    return JSONResponse({"status": "pending", "inbox_id": inbox_id}, status_code=202)
