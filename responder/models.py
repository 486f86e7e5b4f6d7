"""The Alertmanager webhook payload (version 4), as Alertmanager 0.25 really sends it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

AlertStatus = Literal["firing", "resolved"]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{1,64}$")]
# Label names follow Prometheus' data model; values are arbitrary (hostile) text.
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=256)]
LabelSet = dict[LabelName, str]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class Alert(_Wire):
    """One alert inside a webhook. Its identity is `fingerprint` plus `starts_at`."""

    status: AlertStatus
    labels: LabelSet
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: Fingerprint

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def incident(self) -> str:
        """The incident this alert belongs to: the same problem, from the same start."""
        return f"{self.fingerprint}@{self.starts_at.isoformat()}"


class AlertmanagerWebhook(_Wire):
    """The body of `POST /webhook/alertmanager` (Alertmanager webhook_config, version 4)."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    status: AlertStatus
    receiver: str
    group_labels: LabelSet = Field(default_factory=dict, alias="groupLabels")
    common_labels: LabelSet = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[Alert] = Field(min_length=1, max_length=10_000)
