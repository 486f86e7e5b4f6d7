"""The fencing check: a remediation run asks, before each step that changes something,
whether it may still act (`responder.control.fencing` decides).

Authenticated like the operator API (any role may ask: the answer changes nothing); the
runner sends the token `responder up` gives it in RESPONDER_TOKEN.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from responder.exceptions import StoreUnavailable
from responder.intake.auth import Reading
from responder.intake.bodies import documented_body, json_body
from responder.intake.context import TheService
from responder.intake.errors import error

log = logging.getLogger(__name__)

router = APIRouter()

FlowRunId = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
]


class FencingRequest(BaseModel):
    """Body of `POST /api/v1/fencing`: the run's token and the run itself."""

    model_config = ConfigDict(extra="forbid")

    # Decision ids are the store's INTEGER column.
    decision_id: int = Field(ge=1, le=2**31 - 1, strict=True)
    flow_run_id: FlowRunId


@router.post("/api/v1/fencing", openapi_extra=documented_body(FencingRequest))
async def fencing(request: Request, _who: Reading, service: TheService) -> JSONResponse:
    """May this flow run act now? 200 with `act` (and, when not, `refusal` and `message`;
    `again`: ask again in a moment), 422 naming the field that does not fit, 503 when the
    store cannot answer (the run does not act; it asks again, then fails)."""
    limit = service.settings.max_body_bytes
    body = await json_body(request, FencingRequest, "a fencing check", limit)
    try:
        verdict = await service.fencing_check(body.decision_id, body.flow_run_id.lower())
    except StoreUnavailable:
        return error(503, "store unavailable; do not act, ask again")
    if verdict.refusal is not None:
        log.warning("flow run %s may not act: %s", body.flow_run_id, verdict.message)
    return JSONResponse(verdict.to_json())
