"""The settings of the event sources beyond `POST /api/v1/events`: JSON webhooks through a
mapping, a Redis stream, Prefect's event feed (docs/operations.md, Event sources).

`Settings` inherits them, so they are plain `RESPONDER_*` settings like the others.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings


class SourceSettings(BaseSettings):
    """Where events come from, besides CloudEvents over HTTP."""

    mappings_dir: Path = Field(
        Path("config/mappings"),
        description="Mapping files of JSON webhooks: `<name>.yaml` serves POST "
        "/webhook/json/<name>; may be absent.",
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        {},
        description="HMAC secrets by mapping name, for senders that sign their bodies "
        "(a mapping with `signature: github`: X-Hub-Signature-256 is then its credential).",
    )
    redis_url: str | None = Field(
        None,
        description="Redis server whose stream redis_stream is read for CloudEvents; none: off.",
    )
    redis_stream: str = Field(
        "responder-events", min_length=1, max_length=256, description="The stream to read."
    )
    redis_group: str = Field(
        "responder", min_length=1, max_length=256, description="The consumer group replicas share."
    )
    redis_consumer: str | None = Field(
        None,
        max_length=256,
        description="This replica's consumer name in the group; none: the host's name. Keep it "
        "stable: a restarted consumer reads its own unacknowledged entries first.",
    )
    redis_claim_idle_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="An entry delivered to a consumer and unacknowledged this long is claimed "
        "by another (XAUTOCLAIM): the consumer died before it committed.",
    )
    redis_batch: int = Field(100, ge=1, le=10_000, description="Entries read per XREADGROUP.")
    prefect_event_types: list[str] = Field(
        [],
        max_length=100,
        description="Prefect events (e.g. prefect.flow-run.Failed) of runs outside Responder to "
        "take in as CloudEvents, read by the leader from Prefect's event feed; empty: off.",
    )
    prefect_events_lookback_seconds: float = Field(
        600.0,
        ge=0,
        le=86_400,
        description="On taking the lead, Prefect events this old are read again (the inbox's "
        "event identity makes them one): what happened while no replica was leading.",
    )

    @field_validator("webhook_secrets")
    @classmethod
    def _check_webhook_secrets(cls, secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in secrets.items():
            if not secret.get_secret_value():
                raise ValueError(f"the secret of mapping {name} is empty")
        return secrets
