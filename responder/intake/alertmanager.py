"""`POST /webhook/alertmanager`: Alertmanager's webhook (version 4) into the inbox."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from responder import metrics
from responder.events.webhook import AlertmanagerWebhook
from responder.intake.auth import webhook_sender
from responder.intake.context import TheService
from responder.intake.errors import Refused
from responder.intake.inbox import commit
from responder.intake.ratelimit import throttle

WEBHOOK_CONTENT_TYPES = frozenset({"application/json"})


class CountedRoute(APIRoute):
    """A route whose every answer is counted by status code in `responder_webhooks_total`,
    refusals of its dependencies (401, 429) included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def counted(request: Request) -> Response:
            try:
                response = await handle(request)
            except Refused as refused:
                response = refused.response
            metrics.WEBHOOKS.labels(code=str(response.status_code)).inc()
            return response

        return counted


router = APIRouter(route_class=CountedRoute)


def alertmanager_payload(body: bytes, _content_type: str) -> tuple[int, AlertmanagerWebhook]:
    """How many alerts a valid webhook body holds, and the webhook."""
    webhook = AlertmanagerWebhook.model_validate_json(body)
    return len(webhook.alerts), webhook


@router.post(
    "/webhook/alertmanager",
    dependencies=[Depends(webhook_sender), Depends(throttle("alertmanager"))],
)
async def alertmanager_webhook(request: Request, service: TheService) -> JSONResponse:
    """Validate an Alertmanager v4 payload, commit it to the inbox, then acknowledge."""
    return await commit(
        request,
        service,
        "alertmanager",
        WEBHOOK_CONTENT_TYPES,
        alertmanager_payload,
        "an Alertmanager webhook (version 4)",
        "alerts",
    )
