"""Reading request bodies: as sent (never decompressed), within a size limit, and only after
the credentials were checked, so that a stranger learns nothing of what a valid body is."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from responder.intake.errors import Refused, field_errors

B = TypeVar("B", bound=BaseModel)


def refuse_encoded(request: Request) -> None:
    """A 415 for a compressed body: bodies are read as sent, never decompressed (no zip bombs)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Refused(
            415, "content encoding must be identity (uncompressed)", received=encoding[:100]
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to exceed `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Refused:
    return Refused(413, f"body exceeds the limit of {limit} bytes")


async def json_body(request: Request, model: type[B], what: str, limit: int) -> B:
    """The request's JSON body as `model` (an empty body is `{}`), or a 413, 415 or 422."""
    refuse_encoded(request)
    raw = await read_body(request, limit)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise Refused(422, f"body is not {what}", fields=field_errors(exc)) from None


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body the handler reads itself (after checking credentials)."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    return {"requestBody": {**schema, "required": True}}
