"""The Alertmanager webhook payload (version 4), as Alertmanager 0.25 really sends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

# Limits on one webhook, beyond `max_body_bytes`. Real alerts stay far below them; they bound
# what one alert can cost the engine (every label is a fact field) and the decision log.
MAX_ALERTS = 10_000
MAX_LABELS = 64
MAX_LABEL_VALUE = 16_384  # characters
MAX_ANNOTATIONS = 64
MAX_ANNOTATION_VALUE = 65_536  # characters
MAX_NAME = 256  # label and annotation names

AlertStatus = Literal["firing", "resolved"]
_NO_OFFSET = timedelta(0)


def canonical_fingerprint(text: str) -> str:
    """A fingerprint as Alertmanager writes it: lower-case hex, zero-padded to 16 digits.

    Alertmanager's fingerprint is a 64-bit number printed `%016x`; `ABC`, `abc` and
    `0000000000000abc` are that one number, so they must be one alert. Longer fingerprints
    (other senders) keep their significant digits.
    """
    return format(int(text, 16), "016x")


Fingerprint = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-fA-F]{1,64}$"),
    AfterValidator(canonical_fingerprint),
]
# Label names follow Prometheus' data model; values are arbitrary (hostile) text.
LabelName = Annotated[
    str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=MAX_NAME)
]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]
LabelSet = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Annotations = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=MAX_NAME)],
        Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE)],
    ],
    Field(max_length=MAX_ANNOTATIONS),
]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class Alert(_Wire):
    """One alert inside a webhook. Its identity is `fingerprint` plus `starts_at`."""

    status: AlertStatus
    labels: LabelSet
    annotations: Annotations = Field(default_factory=dict)
    # Alertmanager always sends an offset; without one the start is no point in time (its
    # timestamp would depend on this machine's zone, and 0001-01-01 would have none).
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: Fingerprint

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _to_utc_milliseconds(cls, value: datetime | None) -> datetime | None:
        """Alertmanager keeps times to the millisecond in its API (and Prometheus sends
        them so); a webhook may carry more digits for alerts pushed by other clients. One
        precision makes the webhook's and the API's copy of an alert one incident, and one
        zone (UTC) makes `10:00Z`, `11:00+01:00` and `05:00-05:00` one instant, one text."""
        if value is None:
            return None
        if value.microsecond % 1000 == 0 and value.utcoffset() == _NO_OFFSET:
            return value  # as Alertmanager sends it (`...Z`): already so, and half a parse
        try:
            utc = value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise ValueError("the time is out of range once converted to UTC") from None
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    # The texts below are computed once per alert: the engine loop asks for them several
    # times per alert, and `isoformat` was the largest cost of a storm's identity checks.
    # (An alert is never copied with changes, which would carry them over stale.)
    @cached_property
    def started(self) -> str:
        """`starts_at` as stored and compared (ISO 8601, UTC, milliseconds)."""
        return self.starts_at.isoformat()

    @cached_property
    def incident(self) -> str:
        """The incident this alert belongs to: the same problem, from the same start."""
        return f"{self.fingerprint}@{self.started}"

    @cached_property
    def identity(self) -> tuple[str, str, str]:
        """What is decided once: `(fingerprint, startsAt, status)`, whatever is resent."""
        return (self.fingerprint, self.started, self.status)


class AlertmanagerWebhook(_Wire):
    """The body of `POST /webhook/alertmanager` (Alertmanager webhook_config, version 4)."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    status: AlertStatus
    receiver: str
    group_labels: LabelSet = Field(default_factory=dict, alias="groupLabels")
    common_labels: LabelSet = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[Alert] = Field(min_length=1, max_length=MAX_ALERTS)
