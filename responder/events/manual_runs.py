"""Flow runs started by hand (`POST /api/v1/catalog/flows/{name}/runs`).

A request is committed to the inbox like a webhook, and the engine loop turns it into a
decision that goes through the same guard as a rule's: one active run per key, mutexes,
cooldown, pause. It is recorded in the decision log with rule `manual` and the requester.

This module is the request as intake accepts it and the inbox keeps it; the decision it
stands for is made in `responder.decision.manual`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from responder.durations import Duration

MANUAL_RULE = "manual"
LockName = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class RunRequestBody(BaseModel):
    """What a person sends to start a flow by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field(min_length=1, max_length=1000, description="Why; kept in the log.")
    requested_by: str = Field(
        "",
        max_length=200,
        description="Who asks, as the caller says; the log records the operator that the "
        "credentials name, and this only when it differs (as `declared_by`).",
    )
    key: LockName | None = Field(
        None, description="Guard key; default: the flow and its parameters."
    )
    mutex: list[LockName] = Field(default_factory=list, max_length=20)
    cooldown: Duration = 0.0
    approval: bool = Field(
        False, description="Wait for a second person: `responder approve`, or the Prefect UI."
    )


class RunRequest(RunRequestBody):
    """A request as the inbox keeps it: the body and the flow it names."""

    flow: str = Field(min_length=1, max_length=200)
    declared_by: str = Field("", max_length=200, description="`requested_by` as sent, if other.")
