"""Settings: `RESPONDER_*` environment variables over `config/responder.yaml` over defaults."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from responder import tls
from responder.exceptions import ConfigError

DEFAULT_CONFIG_FILE = Path("config/responder.yaml")


class Settings(BaseSettings):
    """Everything Responder can be told. Every field is also `RESPONDER_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="RESPONDER_",
        extra="forbid",
        yaml_file=DEFAULT_CONFIG_FILE,
    )

    host: str = Field("127.0.0.1", description="Address the webhook receiver binds to.")
    port: int = Field(9470, ge=1, le=65535, description="Port of the webhook receiver.")
    public_url: str | None = Field(
        None, description="URL Alertmanager uses to reach Responder; derived from host and port."
    )
    allow_unauthenticated_remote: bool = Field(
        False,
        description="Bind beyond loopback without credentials (only behind a trusted proxy).",
    )
    bearer_token: SecretStr | None = Field(None, description="Token Alertmanager must send.")
    basic_username: str | None = Field(None, description="Basic auth user Alertmanager must send.")
    basic_password: SecretStr | None = Field(None, description="Basic auth password.")
    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token of the operator API (decisions, pause, reload, ...); "
        "without it the webhook credentials are accepted there too.",
    )
    events_token: SecretStr | None = Field(
        None,
        description="Bearer token for POST /api/v1/events; without it, the webhook credentials.",
    )
    tls_certfile: Path | None = Field(
        None,
        description="PEM certificate chain to serve HTTPS with; set with tls_keyfile. "
        "Read at start: a renewed certificate needs a restart.",
    )
    tls_keyfile: Path | None = Field(
        None, description="PEM private key (unencrypted) of tls_certfile."
    )
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates; when set, every client must present a certificate "
        "signed by one of them (mutual TLS). Needs tls_certfile.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For names "
        "the client; by default no one's is believed and the peer address is the client.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="Largest webhook body accepted."
    )
    rate_limit_per_client: float = Field(
        100.0,
        ge=0,
        le=1_000_000,
        description="Requests per second, on average, that each client (peer address) may "
        "send to the webhook, events and manual-run endpoints; above it, 429. 0: no limit.",
    )
    rate_limit_burst: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Requests a client may send at once before rate_limit_per_client applies.",
    )
    rate_limit_clients: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Clients whose rate is remembered; the one idle longest is forgotten first.",
    )
    run_request_wait_seconds: float = Field(
        5.0, ge=0, le=60, description="How long a manual run request waits for its decision."
    )

    data_dir: Path = Field(Path(".responder"), description="Where SQLite and Prefect data live.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL of the store; default SQLite under data_dir.",
    )
    store_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=9,
        description="Store wait before answering 503 (Alertmanager gives up at 10 s).",
    )
    rules_dir: Path = Field(Path("rules"), description="Directory of rule YAML files.")
    services_file: Path = Field(
        Path("config/services.yaml"), description="The service catalog; may be absent."
    )
    reload_check_seconds: float = Field(
        2.0, ge=0, le=3600, description="How often to look for changed rule files; 0: never."
    )
    rule_vars: dict[str, str] = Field(
        default_factory=dict, description="Values rule templates can use as `vars.<name>`."
    )

    lease_seconds: float = Field(
        3600.0, gt=0, description="A guard lease expires after this long if no final state came."
    )
    dry_run: bool = Field(
        False, description="Decide and record every decision, but never dispatch a flow run."
    )
    event_ttl: float = Field(
        3600.0, gt=0, description="Seconds an event or a flow-run outcome stays a fact."
    )
    leader_check_seconds: float = Field(
        2.0, gt=0, le=60, description="How often replicas check or try to take the lead."
    )
    engine_partitions: int = Field(
        16, ge=1, le=1024, description="durable_rules state partitions the alerts spread over."
    )
    engine_batch: int = Field(256, ge=1, le=10_000, description="Inbox rows read per engine step.")
    engine_idle_seconds: float = Field(
        0.5,
        gt=0,
        le=5,
        description="How often an idle engine loop looks at the inbox; this replica's own "
        "webhooks wake it at once.",
    )
    poll_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Fallback poll of flow-run states while the event stream is down.",
    )

    alertmanager_url: str | None = Field(
        None,
        description="Alertmanager's URL: for silences while remediations run, and to resync "
        "the alerts that fired or resolved while no replica was leading.",
    )
    alertmanager_receiver: str = Field(
        "responder",
        max_length=256,
        description="The Alertmanager receiver that sends to Responder; a resync takes only "
        "the alerts routed to it (empty: every alert).",
    )
    prefect_api_url: str | None = Field(
        None, description="Use this Prefect server instead of starting one (PREFECT_API_URL)."
    )
    prefect_port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server.")
    runner_limit: int = Field(
        5,
        ge=1,
        le=200,
        description="Flow runs the embedded runner of `responder up` executes at once; more "
        "wait as scheduled runs. Each run is a Python process of about 90 MiB.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @field_validator("tls_certfile", "tls_keyfile", "tls_client_ca_file")
    @classmethod
    def _check_readable(cls, path: Path | None) -> Path | None:
        return None if path is None else tls.check_readable(path)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an IP address or a CIDR network (e.g. 10.0.0.0/8)"
                ) from None
        return proxies

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile must be set together")
        if self.tls_client_ca_file is not None and self.tls_certfile is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_certfile and tls_keyfile")
        if self.tls_certfile is not None and self.tls_keyfile is not None:
            tls.check_pair(self.tls_certfile, self.tls_keyfile)
        if self.tls_client_ca_file is not None:
            tls.check_client_ca(self.tls_client_ca_file)
        return self

    @model_validator(mode="after")
    def _check_exposure(self) -> Settings:
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic_username and basic_password must be set together")
        if not self.has_credentials and not self.allow_unauthenticated_remote:
            if not _is_loopback(self.host):
                raise ValueError(
                    f"host={self.host!r} is not a loopback address and no credentials are set: "
                    "set bearer_token or basic_username/basic_password, "
                    "or allow_unauthenticated_remote=true"
                )
        return self

    @property
    def has_credentials(self) -> bool:
        return any(
            secret is not None
            for secret in (
                self.bearer_token,
                self.basic_username,
                self.operator_token,
                self.events_token,
            )
        )

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'responder.db'}"

    @property
    def tls_enabled(self) -> bool:
        """True when the receiver serves HTTPS."""
        return self.tls_certfile is not None

    @property
    def base_url(self) -> str:
        """Where Responder's API is reached: `public_url`, or derived from host, port and TLS."""
        scheme = "https" if self.tls_enabled else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/webhook/alertmanager"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings, turning validation errors into a `ConfigError` that names the field."""
    from pydantic import ValidationError

    try:
        if config_file is not None:
            bound = type(
                "Settings",
                (Settings,),
                {"model_config": {**Settings.model_config, "yaml_file": config_file}},
            )
            return bound(**overrides)  # type: ignore[no-any-return]
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
