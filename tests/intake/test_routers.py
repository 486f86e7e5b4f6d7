"""Each router on its own: a handler needs only the service it is given, not the app factory."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
from fastapi import FastAPI

from responder.intake import health
from responder.runtime.service import Service


class StandIn:
    """The part of `Service` that the health routes ask for."""

    engine_alive = True
    leading = True
    flows_loaded = True
    prefect_reachable: bool | None = False

    def __init__(self, problem: str | None) -> None:
        self.problem = problem

    async def store_problem(self) -> str | None:
        return self.problem

    async def backlog(self) -> int:
        return 0


async def test_a_handler_is_called_with_the_service_it_is_given() -> None:
    response = await health.readyz(cast(Service, StandIn("the disk is full")))
    body: dict[str, Any] = json.loads(bytes(response.body))
    assert response.status_code == 503
    assert body["store_problem"] == "the disk is full"
    assert body["checks"] == {
        "store": False,
        "engine": True,
        "leader": True,
        "flows": True,
        "prefect": False,
    }


async def test_a_router_serves_in_an_app_of_its_own() -> None:
    app = FastAPI()
    app.state.service = StandIn(None)
    app.router.routes.extend(health.router.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert (await client.get("/metrics")).status_code == 200
