"""The API's one error format: `{"error": ..., **details}`, and the refusal that carries it.

Handlers and their dependencies raise `Refused`; the app answers with its response as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from responder.exceptions import ResponderError

# Every error body: `error` says what is wrong, `fields` (on a 422) which inputs.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """An error answer: what is wrong in `error`, and whatever else helps in `extra`."""
    return JSONResponse({"error": message, **extra}, status_code=status)


class Refused(ResponderError):
    """A request answered with an error, from wherever it was found out: a dependency (the
    credentials, the rate limit) or deep in a handler (a body too large)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.response = error(status, message, **extra)
        self.response.headers.update(headers or {})


def field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    """Which inputs are wrong and why, for a 422's `fields`."""
    # Never echo the input back: it may be huge or hostile.
    errors = (
        exc.errors(include_url=False, include_input=False)
        if isinstance(exc, ValidationError)
        else exc.errors()
    )
    return [
        {
            # A location holds dict keys (label names), which are input too: cut them short.
            "field": ".".join(str(p)[:100] for p in err["loc"]) or "(body)",
            "message": str(err["msg"])[:300],
            "type": err["type"],
        }
        for err in errors[:50]
    ]
