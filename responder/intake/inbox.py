"""What the intake endpoints share: check a body's type and size, validate it, commit it
to the inbox, and only then acknowledge it (the sender's credentials and rate are checked
before, by the route's dependencies)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from responder.exceptions import StoreUnavailable
from responder.intake.bodies import read_body, refuse_encoded
from responder.intake.errors import Refused, error, field_errors
from responder.runtime.service import Service

log = logging.getLogger(__name__)

# Validates a body (raising pydantic's ValidationError) of a content type: how many items it
# holds, and the body as the engine reads it (`Inbox.add`'s `parsed`).
Parse = Callable[[bytes, str], tuple[int, object]]


def content_type_of(request: Request, accepted: frozenset[str]) -> str:
    """The request's media type, without parameters; a 415 when it is not `accepted`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in accepted:
        raise Refused(
            415,
            f"content type must be {' or '.join(sorted(accepted))}",
            received=content_type[:100],
        )
    return content_type


def parse_items(parse: Parse, body: bytes, content_type: str, what: str) -> tuple[int, object]:
    """`parse`'s answer; a 400 for a body that is not JSON, a 422 for one that is not `what`."""
    try:
        return parse(body, content_type)
    except ValidationError as exc:
        errors = field_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            raise Refused(400, "body is not valid JSON", detail=errors[0]["message"]) from None
        raise Refused(422, f"body is not {what}", fields=errors) from None


async def commit(
    request: Request,
    service: Service,
    source: str,
    content_types: frozenset[str],
    parse: Parse,
    what: str,
    noun: str,
) -> JSONResponse:
    """Check type and size, validate, commit to the inbox as `source`, then acknowledge with
    the inbox id and the number of items (under `noun`)."""
    refuse_encoded(request)
    content_type = content_type_of(request, content_types)
    body = await read_body(request, service.settings.max_body_bytes)
    count, parsed = parse_items(parse, body, content_type, what)
    return await acknowledge(service, source, body, {noun: count}, parsed)


async def acknowledge(
    service: Service, source: str, body: bytes, answer: dict[str, Any], parsed: object = None
) -> JSONResponse:
    """Commit a valid body to the inbox as `source` (with its `parsed` form, if any, for the
    engine), then acknowledge with its inbox id and `answer`; a 503 when the store did not
    commit (the sender retries)."""
    try:
        inbox_id = await service.accept(source, body, parsed)
    except StoreUnavailable as exc:
        log.error("%s not committed, answering 503: %s", source, exc)
        return error(503, "store unavailable; retry")
    return JSONResponse({"status": "accepted", "inbox_id": inbox_id, **answer})
