"""The HTTP API: the app factory, which wires the routers around a `Service`.

The routes live in their own modules: the Alertmanager webhook (`alertmanager`), CloudEvents
(`events`), JSON webhooks through a mapping (`json_webhooks`), the operator API (`operator`,
`catalog`, `approvals`), the runs' fencing check (`fencing`) and health and metrics (`health`).
Their credentials (`auth`) and rate limits (`ratelimit`) are dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from responder.exceptions import DocumentError, StoreUnavailable
from responder.intake import (
    alertmanager,
    approvals,
    catalog,
    events,
    fencing,
    health,
    json_webhooks,
    maintenance,
    operator,
)
from responder.intake.auth import Access
from responder.intake.errors import ERROR_SCHEMA, Refused, error, field_errors
from responder.intake.mappings import load_mappings
from responder.intake.ratelimit import RateLimit
from responder.runtime.service import Service


def create_app(service: Service) -> FastAPI:
    """Build the FastAPI app around a `Service`; the app's lifespan starts and stops it."""
    # The API's description is served to operators only, like the rest of the API: no open
    # /docs, /redoc or /openapi.json.
    app = FastAPI(
        title="Responder",
        version="0.1.0",
        lifespan=_lifespan(service),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.access = Access.from_settings(service.settings)
    app.state.rate_limit = RateLimit.from_settings(service.settings)
    app.state.mappings = load_mappings(service.settings.mappings_dir)
    service.also_reload(
        lambda: load_mappings(service.settings.mappings_dir),
        lambda mappings: setattr(app.state, "mappings", mappings),
    )
    _describe_errors(app)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    # The routes themselves, not `include_router`: FastAPI includes a router lazily, and
    # `app.routes` would list the router instead of its routes (tests walk every route).
    for routes in (
        alertmanager,
        events,
        json_webhooks,
        operator,
        catalog,
        approvals,
        maintenance,
        fencing,
        health,
    ):
        app.router.routes.extend(routes.router.routes)
    return app


def _lifespan(service: Service) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the service with the app and stop it after; reload on SIGHUP meanwhile."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        hangup = _on_sighup(service)
        try:
            yield
        finally:
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await service.stop()

    return lifespan


def _describe_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI document describe a 422 as this API answers it."""
    fastapi_openapi = app.openapi

    def openapi_document() -> dict[str, Any]:
        if app.openapi_schema is None:
            fastapi_openapi()["components"]["schemas"]["HTTPValidationError"] = ERROR_SCHEMA
        return fastapi_openapi()

    app.openapi = openapi_document  # type: ignore[method-assign]


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    """The answer a dependency or handler refused the request with."""
    assert isinstance(exc, Refused)
    return exc.response


async def _invalid_parameters(_request: Request, exc: Exception) -> JSONResponse:
    """Path and query parameters that do not fit, in this API's error format. Every route
    with such parameters is an operator route, whose credentials dependency FastAPI has
    solved before it validated them: a caller without credentials got a 401 instead."""
    assert isinstance(exc, RequestValidationError)
    return error(422, "invalid request parameters", fields=field_errors(exc))


def _on_sighup(service: Service) -> bool:
    """Reload on SIGHUP, like Prometheus and Alertmanager; False where signals cannot be set."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        async def run() -> None:
            with contextlib.suppress(DocumentError, StoreUnavailable):
                await service.reload()

        reloads.add(task := loop.create_task(run()))
        task.add_done_callback(reloads.discard)

    reloads: set[asyncio.Task[None]] = set()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError):
        return False  # not the main thread
    return True
