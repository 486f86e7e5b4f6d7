"""Runs waiting for approval: listing them, and approving or rejecting one as the calling
operator (the decision log says who)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from responder.events.manual_runs import MANUAL_RULE
from responder.exceptions import ApprovalError, DispatchError
from responder.intake.auth import SHARED_IDENTITIES, Approving, Operator, Reading, audit
from responder.intake.bodies import documented_body, json_body
from responder.intake.context import TheService
from responder.intake.errors import error
from responder.intake.views import linked, waiting
from responder.runtime.service import Service
from responder.storage.approvals import ANSWERING

FLOW_RUN_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

router = APIRouter()


class ApproveRequest(BaseModel):
    """Body of `POST /api/v1/approvals/{flow_run_id}/approve` (may be empty)."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field("", max_length=2000)


class RejectRequest(BaseModel):
    """Body of `POST /api/v1/approvals/{flow_run_id}/reject`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


@router.get("/api/v1/approvals")
async def list_approvals(_who: Reading, service: TheService) -> JSONResponse:
    """The runs waiting for approval: the alert, the rule and what will be done."""
    rows = linked(service, await service.awaiting_approval())
    return JSONResponse({"approvals": [waiting(row) for row in rows]})


@router.post(
    "/api/v1/approvals/{flow_run_id}/approve", openapi_extra=documented_body(ApproveRequest)
)
async def approve(
    request: Request,
    who: Approving,
    service: TheService,
    flow_run_id: str = Path(pattern=FLOW_RUN_ID),
) -> JSONResponse:
    """Approve a waiting run; recorded with the operator's name."""
    limit = service.settings.max_body_bytes
    body = await json_body(request, ApproveRequest, "an approval", limit)
    return await answer(service, who, flow_run_id, True, body.comment)


@router.post("/api/v1/approvals/{flow_run_id}/reject", openapi_extra=documented_body(RejectRequest))
async def reject(
    request: Request,
    who: Approving,
    service: TheService,
    flow_run_id: str = Path(pattern=FLOW_RUN_ID),
) -> JSONResponse:
    """Reject a waiting run, saying why; the run ends Cancelled, recorded with the name."""
    limit = service.settings.max_body_bytes
    body = await json_body(request, RejectRequest, "a rejection", limit)
    return await answer(service, who, flow_run_id, False, body.reason)


async def answer(
    service: Service, who: Operator, flow_run_id: str, approved: bool, comment: str
) -> JSONResponse:
    """Approve or reject a waiting run as `who`; the decision log says who."""
    found = [
        row
        for row in await service.awaiting_approval()
        if row["flow_run_id"] == flow_run_id.lower()
    ]
    if not found:
        return error(404, f"no flow run {flow_run_id} is awaiting approval", field="flow_run_id")
    if found[0]["approval_state"] == ANSWERING:
        return error(409, f"flow run {flow_run_id} is being answered by someone else")
    asked = found[0]["rule"] == MANUAL_RULE and found[0]["labels"].get("requested_by")
    if asked == who.name and who.name not in SHARED_IDENTITIES:
        # A run started by hand with approval waits for a second person.
        return error(409, f"{who.name} asked for this run: another person must answer")
    if not service.answers_approvals:
        return error(503, "no Prefect server here to send the answer to")
    verb = "approves" if approved else "rejects"
    audit(who, "%s flow run %s: %r", verb, flow_run_id, comment)
    try:
        approval = await service.answer_approval(flow_run_id.lower(), approved, who.name, comment)
    except ApprovalError as exc:
        return error(409, str(exc))
    except DispatchError as exc:
        return error(503, str(exc))
    return JSONResponse({"decision_id": found[0]["id"], "approval": approval})
