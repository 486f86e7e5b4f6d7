"""The operator API: decisions and an alert's story, the pause switch, the guard's state,
reloading the rules, and this API's own description."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from responder.events.webhook import canonical_fingerprint
from responder.exceptions import CheckFailed, DocumentError, StoreUnavailable
from responder.intake.auth import Operating, Reading, audit
from responder.intake.bodies import documented_body, json_body
from responder.intake.context import TheService
from responder.intake.errors import error
from responder.intake.views import linked

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refuse it as a bad query

router = APIRouter()


class PauseRequest(BaseModel):
    """Body of `POST /api/v1/pause`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)
    by: str = Field("", max_length=200)


@router.get("/api/v1/decisions")
async def list_decisions(
    _who: Reading,
    service: TheService,
    limit: int = Query(100, ge=1, le=1000),
    rule: str | None = Query(None, max_length=64, pattern=NO_NUL),
    verdict: str | None = Query(None, max_length=16, pattern=NO_NUL),
    alertname: str | None = Query(None, max_length=256, pattern=NO_NUL),
    # Decision ids are the store's INTEGER column: a larger one cannot reach the database.
    before_id: int | None = Query(None, ge=1, le=2**31 - 1),
) -> JSONResponse:
    """Recorded decisions, newest first, with the flow run's Prefect UI link."""
    rows = await service.decisions(
        limit=limit, rule=rule, verdict=verdict, alertname=alertname, before_id=before_id
    )
    return JSONResponse({"decisions": linked(service, rows)})


@router.get("/api/v1/explain/{fingerprint}")
async def explain(
    _who: Reading, service: TheService, fingerprint: str = Path(pattern=r"^[0-9a-fA-F]{1,64}$")
) -> JSONResponse:
    """An alert's story: every decision about it, and how each rule judges it now."""
    fingerprint = canonical_fingerprint(fingerprint)  # as alerts are stored
    rows = linked(service, await service.decisions(limit=1000, fingerprint=fingerprint))
    held = [
        {
            "incident": alert.incident,
            "rules": [
                {"rule": rule.name, "holds": failure is None, "failure": failure}
                for rule, failure in service.judge(alert)
            ],
        }
        for alert in service.held_alerts(fingerprint)
    ]
    incidents = await service.incidents_of(fingerprint)
    if not rows and not held and not incidents:
        return error(404, f"no alert with fingerprint {fingerprint} was seen")
    return JSONResponse({"decisions": list(reversed(rows)), "held": held, "incidents": incidents})


@router.post("/api/v1/pause", openapi_extra=documented_body(PauseRequest))
async def pause(request: Request, who: Operating, service: TheService) -> JSONResponse:
    """Refuse every new remediation until resumed; recorded as refusal `paused`, `by`
    the operator the credentials name (`declared_by`: the body's `by`, if another)."""
    limit = service.settings.max_body_bytes
    body = await json_body(request, PauseRequest, "a pause request", limit)
    name = audit(who, "pauses remediation: %r", body.reason)
    paused = await service.pause(body.reason, name, declared_by=body.by)
    return JSONResponse({"pause": paused.to_json()})


@router.post("/api/v1/resume")
async def resume(who: Operating, service: TheService) -> JSONResponse:
    """Lift the pause."""
    await service.resume()
    audit(who, "resumes remediation")
    return JSONResponse({"pause": None})


@router.get("/api/v1/status")
async def status(_who: Reading, service: TheService) -> JSONResponse:
    """The pause switch, held keys and mutexes, cooling keys, the decisions whose run
    awaits approval, and incidents by remediation state (with the waiting ones)."""
    waiting = await service.awaiting_approval()
    return JSONResponse(
        {
            **await service.guard_state(),
            "incidents": await service.incidents(),
            "awaiting_approval": [
                {"decision_id": row["id"], "flow_run_id": row["flow_run_id"]} for row in waiting
            ],
        }
    )


@router.post("/-/reload")
async def reload(who: Operating, service: TheService) -> JSONResponse:
    """Reload rules and the catalog; on an error the old ones stay and the error says why."""
    audit(who, "reloads the rules")
    try:
        book = await service.reload()
    except CheckFailed as exc:
        return error(400, str(exc), file=exc.file, line=exc.line, errors=exc.errors)
    except DocumentError as exc:
        return error(400, str(exc), file=exc.file, line=exc.line)
    except StoreUnavailable:
        return error(503, "store unavailable; the previous rules stay in force")
    return JSONResponse({"status": "reloaded", "rules": len(book.rules)})


@router.get("/api/v1/openapi.json")
async def openapi(request: Request, _who: Reading) -> JSONResponse:
    """This API's OpenAPI document."""
    return JSONResponse(request.app.openapi())
