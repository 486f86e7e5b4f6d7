"""`POST /webhook/json/{mapping}`: any sender's JSON webhook, made a CloudEvent by its
mapping file (`intake/mappings.py`) and committed to the inbox before the answer.

The CloudEvent is what the inbox keeps (as `cloudevents`), so the engine reads it like one
posted to `/api/v1/events`, and its id (the sender's delivery id, or a hash of the body)
makes a resent webhook the same event.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from responder.intake.auth import events_sender, signed_sender
from responder.intake.bodies import read_body, refuse_encoded
from responder.intake.context import TheService
from responder.intake.errors import Refused
from responder.intake.inbox import acknowledge, content_type_of
from responder.intake.mappings import NAME, JsonMapping
from responder.intake.ratelimit import throttle

JSON = frozenset({"application/json"})

router = APIRouter()
_throttled = throttle("json-webhook")


@router.post("/webhook/json/{mapping}")
async def json_webhook(
    mapping: Annotated[str, Path(pattern=NAME.pattern)], request: Request, service: TheService
) -> JSONResponse:
    """A JSON body, turned into one CloudEvent by the mapping `mapping`, into the inbox."""
    mappings: dict[str, JsonMapping] = request.app.state.mappings
    found = mappings.get(mapping)
    secret = service.settings.webhook_secrets.get(mapping)
    signed = found is not None and found.signature == "github" and secret is not None
    if not signed:
        await events_sender(request)  # before anything about the mappings is told
        await _throttled(request)
    if found is None:
        raise Refused(404, "no such mapping", mapping=mapping[:100], known=sorted(mappings))
    refuse_encoded(request)
    content_type_of(request, JSON)
    body = await read_body(request, service.settings.max_body_bytes)
    if signed:
        assert secret is not None
        signed_sender(request, body, secret)
        await _throttled(request)
    event = found.event(body, request.headers)
    answer = {"events": 1, "id": event.id, "type": event.type}
    return await acknowledge(
        service, "cloudevents", event.model_dump_json(exclude_none=True).encode(), answer
    )
