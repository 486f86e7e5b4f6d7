"""`POST /api/v1/events`: CloudEvents 1.0 (structured JSON, one or a batch) into the inbox."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from responder.events.cloudevents import CloudEvent, is_batch, parse_events
from responder.intake.auth import events_sender
from responder.intake.context import TheService
from responder.intake.inbox import commit
from responder.intake.ratelimit import throttle

EVENT_CONTENT_TYPES = frozenset(
    {"application/cloudevents+json", "application/cloudevents-batch+json", "application/json"}
)

router = APIRouter()


def cloudevents_payload(body: bytes, content_type: str) -> tuple[int, list[CloudEvent]]:
    """How many events a valid body holds, and the events: a batch by its content type, or,
    for plain JSON, by its shape."""
    batch = content_type == "application/cloudevents-batch+json" or (
        content_type == "application/json" and is_batch(body)
    )
    events = parse_events(body, batch)
    return len(events), events


@router.post(
    "/api/v1/events", dependencies=[Depends(events_sender), Depends(throttle("cloudevents"))]
)
async def cloudevents(request: Request, service: TheService) -> JSONResponse:
    """Accept CloudEvents 1.0 (structured JSON, one or a batch) into the inbox."""
    return await commit(
        request,
        service,
        "cloudevents",
        EVENT_CONTENT_TYPES,
        cloudevents_payload,
        "a CloudEvent (1.0, structured mode) or a batch of them",
        "events",
    )
