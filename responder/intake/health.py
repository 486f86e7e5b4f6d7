"""Health and metrics, open to anyone (no credentials): for load balancers, orchestrators
and Prometheus."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from responder import metrics
from responder.exceptions import StoreUnavailable
from responder.intake.context import TheService

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: TheService) -> JSONResponse:
    """Ready when the store answers, the engine loop runs and the flows are loaded."""
    store_problem = await service.store_problem()
    checks = {
        "store": store_problem is None,
        "engine": service.engine_alive,
        "leader": service.leading,
        "flows": service.flows_loaded,
    }
    if (prefect := service.prefect_reachable) is not None:
        checks["prefect"] = prefect
    ready = checks["store"] and checks["engine"] and checks["flows"]
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    if store_problem is not None:
        body["store_problem"] = store_problem
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus_metrics(service: TheService) -> Response:
    """Prometheus exposition format."""
    with contextlib.suppress(StoreUnavailable):
        metrics.INBOX_BACKLOG.set(await service.backlog())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
