"""Flow runs started by hand (`POST /api/v1/catalog/flows/{name}/runs`).

A request is committed to the inbox like a webhook, and the engine loop turns it into a
decision that goes through the same guard as a rule's: one active run per key, mutexes,
cooldown, pause. It is recorded in the decision log with rule `manual` and the requester.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from responder.decisions import Decision
from responder.models import Alert
from responder.rules import Duration, GuardSpec

MANUAL_RULE = "manual"
MANUAL_ALERTNAME = "ManualRun"
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


def default_key(flow: str, parameters: dict[str, Any]) -> str:
    """One active manual run per flow and parameter set."""
    digest = hashlib.sha256(
        json.dumps(parameters, sort_keys=True, default=str).encode()
    ).hexdigest()
    return f"manual/{flow}/{digest[:16]}"


def decision_for(request: RunRequest, inbox_id: int, received_at: float) -> Decision:
    """The decision a run request stands for; its 'alert' says who asked, and why."""
    alert = Alert(
        status="firing",
        labels={
            "alertname": MANUAL_ALERTNAME,
            "flow": request.flow,
            "requested_by": request.requested_by,
            **({"declared_by": request.declared_by} if request.declared_by else {}),
        },
        annotations={"reason": request.reason},
        starts_at=datetime.fromtimestamp(received_at, UTC),
        fingerprint=f"{inbox_id:016x}",
    )
    key = request.key or default_key(request.flow, request.parameters)
    parameters = dict(request.parameters)
    if request.approval:
        parameters["approval_required"] = True
    # The key and mutexes are literal names here, not templates: they live on the decision.
    policy = GuardSpec(key="-", cooldown=request.cooldown)
    return Decision(
        rule=MANUAL_RULE,
        flow=request.flow,
        parameters=parameters,
        key=key,
        alert=alert,
        mutex=tuple(sorted(set(request.mutex))),
        policy=policy,
    )
