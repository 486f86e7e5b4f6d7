"""`alertmanager.silence` and `alertmanager.expire_silence`: quiet an alert while a flow works.

A silence links back to the flow run that set it (its comment carries the run's UI URL), so
whoever sees a silenced alert in Alertmanager can find out what is being done about it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import httpx
from prefect import get_run_logger
from prefect.runtime import flow_run
from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from flows.errors import OperationFailed
from flows.operations import operation
from flows.operations.api import call_api, transient_status
from responder.orchestration.alertmanager import silence_not_found

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=200)]
SilenceId = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
]
MAX_SILENCE_SECONDS = 7 * 86_400


class SilenceRequest(BaseModel):
    """Parameters of `alertmanager.silence`: silence the alerts whose labels equal these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl = Field(description="Alertmanager's base URL, e.g. http://alertmanager:9093.")
    matchers: dict[LabelName, Annotated[str, StringConstraints(min_length=1)]] = Field(
        min_length=1,
        description="Label name → exact value; every one must match. An empty value is "
        'refused: Alertmanager reads `team=""` as "no team label", which silences other '
        "alerts, not this one.",
    )
    duration_seconds: float = Field(gt=0, le=MAX_SILENCE_SECONDS)
    comment: str = Field(min_length=1, max_length=1000)
    created_by: str = Field("responder", min_length=1, max_length=200)
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class Silence(BaseModel):
    """The silence Alertmanager created, and when it ends on its own."""

    silence_id: str
    ends_at: AwareDatetime


class ExpireSilence(BaseModel):
    """Parameters of `alertmanager.expire_silence`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl = Field(description="Alertmanager's base URL, e.g. http://alertmanager:9093.")
    silence_id: SilenceId
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class SilenceExpired(BaseModel):
    """The silence no longer silences anything (`expired` is False if it was already gone)."""

    silence_id: str
    expired: bool


class AlertmanagerFailed(OperationFailed):
    """Alertmanager could not be reached, or refused the request (with its reason)."""


@operation(
    "alertmanager.silence",
    risk="low",
    tags=["alertmanager"],
    retries=2,
    retry_delays=(1, 3),
)
def alertmanager_silence(params: SilenceRequest) -> Silence:
    """Silence the alerts matching all `matchers` for `duration_seconds` (POST /api/v2/silences).

    Inside a flow run, the comment ends with a link to the run in the Prefect UI. The silence
    ends on its own; `alertmanager.expire_silence` lifts it earlier. A retry after an answer
    was lost may leave a second, identical silence, which also ends on its own.
    """
    now = datetime.now(UTC)
    ends_at = now + timedelta(seconds=params.duration_seconds)
    body = {
        "matchers": [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in sorted(params.matchers.items())
        ],
        "startsAt": now.isoformat(),
        "endsAt": ends_at.isoformat(),
        "createdBy": params.created_by,
        "comment": _with_flow_run_link(params.comment),
    }
    response = _send(params.url, "POST", "/api/v2/silences", params.timeout_seconds, json=body)
    silence_id = str(response.json()["silenceID"])
    get_run_logger().info("silence %s set until %s", silence_id, ends_at.isoformat())
    return Silence(silence_id=silence_id, ends_at=ends_at)


@operation(
    "alertmanager.expire_silence",
    risk="low",
    tags=["alertmanager"],
    retries=2,
    retry_delays=(1, 3),
)
def alertmanager_expire_silence(params: ExpireSilence) -> SilenceExpired:
    """Lift a silence now (DELETE /api/v2/silence/{id}); one Alertmanager does not know is gone.

    A silence Alertmanager never had, or has already dropped, counts as lifted, with `expired`
    False. Expiring an expired silence succeeds (Alertmanager answers 200 again).
    """
    path = f"/api/v2/silence/{params.silence_id}"
    response = _send(params.url, "DELETE", path, params.timeout_seconds, absent_ok=True)
    expired = not silence_not_found(response)
    get_run_logger().info(
        "silence %s %s", params.silence_id, "expired" if expired else "was already gone"
    )
    return SilenceExpired(silence_id=params.silence_id, expired=expired)


def _send(
    url: AnyHttpUrl,
    method: str,
    path: str,
    timeout: float,
    *,
    absent_ok: bool = False,
    json: object = None,
) -> httpx.Response:
    """One call to Alertmanager's API; anything but success raises `AlertmanagerFailed`."""
    full_url = f"{str(url).rstrip('/')}{path}"
    response = call_api(AlertmanagerFailed, method, full_url, timeout=timeout, json=json)
    if response.is_success or (absent_ok and silence_not_found(response)):
        return response
    raise AlertmanagerFailed(
        f"{method} {full_url} answered {response.status_code}: {response.text.strip()[:500]}",
        transient=transient_status(response.status_code),
    )


def _with_flow_run_link(comment: str) -> str:
    """The comment, followed by the current flow run's UI URL (or its id, without a UI URL)."""
    run_id = flow_run.id
    if run_id is None:
        return comment
    url = flow_run.ui_url
    # Without a configured UI URL, Prefect formats the base as "None".
    if url and url.startswith(("http://", "https://")):
        return f"{comment} (flow run: {url})"
    return f"{comment} (flow run {run_id})"
