"""Maintenance windows through the API: add one, list them, remove one.

Adding and removing are for operators; the decision log names the window that refused a
decision. A window's body is `decision.maintenance.MaintenanceWindow`, its name required.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from responder.decision.maintenance import MaintenanceWindow, WindowName
from responder.intake.auth import Operating, Reading, audit
from responder.intake.bodies import documented_body, json_body
from responder.intake.context import TheService
from responder.intake.errors import error

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"

router = APIRouter()


class MaintenanceRequest(MaintenanceWindow):
    """Body of `POST /api/v1/maintenance`: a window, named."""

    name: WindowName


@router.get("/api/v1/maintenance")
async def list_windows(_who: Reading, service: TheService) -> JSONResponse:
    """Every maintenance window (the catalog's and the API's), and whether it is in effect."""
    return JSONResponse({"windows": await service.windows()})


@router.post("/api/v1/maintenance", openapi_extra=documented_body(MaintenanceRequest))
async def add_window(request: Request, who: Operating, service: TheService) -> JSONResponse:
    """Add a maintenance window; from the next decision on it refuses what it covers."""
    limit = service.settings.max_body_bytes
    body = await json_body(request, MaintenanceRequest, "a maintenance window", limit)
    window = MaintenanceWindow.model_validate(body.model_dump(exclude_defaults=True))
    problem = await service.add_window(window, who.name)
    if problem is not None:
        return error(409, problem, field="name")
    audit(who, "adds maintenance window %s: %r", window.name, window.reason)
    shown = next(w for w in await service.windows() if w["name"] == window.name)
    return JSONResponse({"window": shown}, status_code=201)


@router.delete("/api/v1/maintenance/{name}")
async def remove_window(
    who: Operating, service: TheService, name: str = Path(pattern=NAME)
) -> JSONResponse:
    """Remove a window added through the API (the catalog's are removed from its file)."""
    if not await service.remove_window(name):
        return error(404, f"no maintenance window {name!r} was added through the API", field="name")
    audit(who, "removes maintenance window %s", name)
    return JSONResponse({"removed": name})
