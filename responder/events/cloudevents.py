"""CloudEvents 1.0 in JSON (structured mode, single or batch) from systems beyond Alertmanager.

Each event becomes an `event` fact until `event_ttl` passes, with the fields `type`, `source`,
`subject`, `id`, plus every top-level scalar of its `data` whose key is a valid field name.
A rule correlates it with alerts:

    when: [{fact: event, where: ['type="deploy.finished"',
                                 'workload="{{ alert.labels.deployment }}"']}]
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from responder.events.facts import Fact
from responder.events.webhook import Alert

_FIELD = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")
ATTRIBUTES = ("type", "source", "subject", "id", "time")
MAX_VALUE = 4096


class CloudEvent(BaseModel):
    """One CloudEvent (specversion 1.0); extension attributes are kept but not used."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=256)
    subject: str | None = Field(None, max_length=1024)
    time: datetime | None = None
    datacontenttype: str | None = None
    data: dict[str, Any] | None = None

    def fact(self, expires_at: float) -> Fact:
        fields = {"type": self.type, "source": self.source, "subject": self.subject or ""}
        fields["id"] = self.id
        if self.time is not None:  # for an absence rule: a follower older than its first
            fields["time"] = repr(self.time.timestamp())
        for key, value in (self.data or {}).items():
            if key in ATTRIBUTES or not _FIELD.match(key):
                continue
            if isinstance(value, str | int | float | bool):
                text = str(value).lower() if isinstance(value, bool) else str(value)
                fields[key] = text[:MAX_VALUE]
        return Fact("event", fields, expires_at, source=f"event:{self.source}"[:128])

    def flat(self) -> dict[str, str]:
        """What matchers, `same` and joins read: the attributes, and `data.a.b` for each
        scalar of the data (nested mappings included; lists are not paths)."""
        fields = {"type": self.type, "source": self.source, "subject": self.subject or ""}
        fields["id"] = self.id
        _flatten("data", self.data or {}, fields, depth=0)
        return fields

    def context(self) -> dict[str, Any]:
        """What a rule's templates see as `event`."""
        time = "" if self.time is None else self.time.astimezone(UTC).isoformat()
        return {
            "type": self.type,
            "source": self.source,
            "subject": self.subject or "",
            "id": self.id,
            "time": time,
            "data": dict(self.data or {}),
        }

    @property
    def digest(self) -> str:
        """The event's identity (`source` and `id`, as CloudEvents defines it), hashed."""
        return hashlib.sha256(json.dumps([self.source, self.id]).encode()).hexdigest()[:32]

    def as_alert(self) -> Alert:
        """The event as the decision log, the guard and the runs see the thing a decision is
        about: its identity is the event's (a resent event is a duplicate, decided once);
        its labels are `flat()`, its name `event:<type>`. Built, not validated: the names
        are paths, and the event was validated at the door."""
        labels = {"alertname": f"event:{self.type}", **self.flat()}
        return Alert.model_construct(
            status="firing",
            labels=labels,
            annotations={},
            starts_at=EVENT_EPOCH,
            ends_at=None,
            generator_url="",
            fingerprint=self.digest,
        )


# Every event's "start": its identity is its source and id alone.
EVENT_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DEPTH = 8


def _flatten(prefix: str, data: dict[str, Any], into: dict[str, str], depth: int) -> None:
    for key, value in data.items():
        if not isinstance(key, str) or not _FIELD.match(key):
            continue
        path = f"{prefix}.{key}"
        if isinstance(value, dict) and depth < MAX_DEPTH:
            _flatten(path, value, into, depth + 1)
        elif isinstance(value, str | int | float | bool):
            text = str(value).lower() if isinstance(value, bool) else str(value)
            into[path] = text[:MAX_VALUE]


def _unflatten(fields: dict[str, str]) -> dict[str, Any]:
    """An event's attributes and data again, from `CloudEvent.flat` fields."""
    event: dict[str, Any] = {k: fields.get(k, "") for k in ("type", "source", "subject", "id")}
    data: dict[str, Any] = {}
    for path, value in fields.items():
        if path.startswith("data."):
            *parents, leaf = path.split(".")[1:]
            here = data
            for part in parents:
                here = here.setdefault(part, {})
                if not isinstance(here, dict):
                    break
            else:
                here[leaf] = value
    event["data"] = data
    return event


OUTCOME_SOURCE = "responder/outcome"
OUTCOME_TYPE = "responder.outcome"
EventBatch = TypeAdapter(list[CloudEvent])


def parse_events(body: bytes, batch: bool) -> list[CloudEvent]:
    """Validate a structured-mode body: one event, or a JSON array of them."""
    if batch:
        return EventBatch.validate_json(body)
    return [CloudEvent.model_validate_json(body)]


def is_batch(body: bytes) -> bool:
    return body.lstrip()[:1] == b"["


class Outcome(BaseModel):
    """A remediation's final state, fed back to the engine as an `outcome` fact.

    Its fields are the alert's labels, then `rule`, `flow`, `key` and `state` (COMPLETED,
    FAILED, CRASHED, CANCELLED, REJECTED), so rules join it with the alert they act on:

        when: [{fact: outcome, where: ['rule="restart-crashed-service"', 'state!="COMPLETED"',
                                       'instance="{{ alert.labels.instance }}"']}]
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    decision_id: int
    state: str
    rule: str | None
    flow: str | None
    key: str | None
    incident: str
    labels: dict[str, str]
    # The run's approval, if it asked for one: `rejected` or `unanswered` end the ladder.
    approval: str | None = None

    def body(self) -> bytes:
        """The outcome's inbox row (`control.leases.finish` writes it)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_body(cls, body: bytes) -> Outcome:
        """Read an outcome's inbox row (the engine loop reads it)."""
        return cls.model_validate_json(body)

    def event(self) -> CloudEvent:
        """The outcome as rules on events see it: type `responder.outcome`, subject the
        rule, data its `rule`, `flow`, `key`, `state`, the `labels` of what was decided on,
        and, when that was an event, the `event` itself (`event.data.event.data.FIELD`)."""
        labels = {k: v for k, v in self.labels.items() if "." not in k}
        data: dict[str, Any] = {"rule": self.rule or "", "flow": self.flow or "", "labels": labels}
        data.update(key=self.key or "", state=self.state, incident=self.incident)
        if labels.get("alertname", "").startswith("event:"):
            data["event"] = _unflatten(self.labels)
        return CloudEvent(
            specversion="1.0",
            id=f"outcome:{self.decision_id}",
            source=OUTCOME_SOURCE,
            type=OUTCOME_TYPE,
            subject=self.rule or "",
            data=data,
        )

    def fact(self, expires_at: float) -> Fact:
        # Whole label values (the webhook already bounds them), or a rule's join with the
        # alert's own labels would fail for a long value.
        fields = {k: v for k, v in self.labels.items() if _FIELD.match(k)}
        fields.update(
            rule=self.rule or "", flow=self.flow or "", key=self.key or "", state=self.state
        )
        return Fact("outcome", fields, expires_at, source=f"outcome:{self.decision_id}")
