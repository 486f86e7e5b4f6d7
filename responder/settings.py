"""Settings: `RESPONDER_*` environment variables over `config/responder.yaml` over defaults."""

from __future__ import annotations

import difflib
import ipaddress
import json
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from responder import tls
from responder.exceptions import ConfigError
from responder.intake import auth
from responder.runner_settings import RunnerSettings
from responder.source_settings import SourceSettings

DEFAULT_CONFIG_FILE = Path("config/responder.yaml")
DAY = 86_400.0
# The store's dialects and the async driver each needs (`Store` passes asyncpg's options).
STORE_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
SECRETS = ("bearer_token", "basic_password", "operator_token", "events_token")
# URLs that may carry a user and password (a database's, a proxied API's).
URL_FIELDS = ("database_url", "alertmanager_url", "prefect_api_url", "public_url", "redis_url")


def without_credentials(url: str) -> str:
    """The URL with the password of any `user:password@` replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{slash}{path}"


class SettingError(ConfigError, ValueError):
    """A setting that is wrong, with what it accepts; `load_settings` makes it one line.

    A `ValueError` too: raised in a validator, pydantic reports it as that field's error.
    """

    def __init__(self, field: str, value: Any, problem: str, accepted: str) -> None:
        self.field, self.value, self.problem, self.accepted = field, value, problem, accepted
        super().__init__(problem)

    def line(self) -> str:
        shown = _shown(self.field, self.value)
        return f"field {self.field} value {shown}: {self.problem}; accepted: {self.accepted}"


class OperatorSpec(BaseModel):
    """A named operator of the operator API: its own bearer token and its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
        description="Who: recorded with every change and decision this operator makes.",
    )
    token: SecretStr = Field(max_length=4096, description="The bearer token it presents.")
    role: auth.Role = Field(
        description="viewer (read), operator (+ pause, resume, runs, reload), approver "
        "(+ approve, reject) or admin (everything)."
    )

    @field_validator("token")
    @classmethod
    def _check_token(cls, token: SecretStr) -> SecretStr:
        _check_credential(token.get_secret_value(), "token")
        return token


class Settings(SourceSettings, RunnerSettings):
    """Everything Responder can be told. Every field is also `RESPONDER_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="RESPONDER_",
        extra="forbid",
        yaml_file=DEFAULT_CONFIG_FILE,
        allow_inf_nan=False,  # every duration and size is a finite number
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
    bearer_token: SecretStr | None = Field(
        None, max_length=4096, description="Token Alertmanager must send."
    )
    basic_username: str | None = Field(
        None, max_length=256, description="Basic auth user Alertmanager must send."
    )
    basic_password: SecretStr | None = Field(
        None, max_length=4096, description="Basic auth password."
    )
    operator_token: SecretStr | None = Field(
        None,
        max_length=4096,
        description="Bearer token of the operator API (decisions, pause, reload, ...); "
        "without it the webhook credentials are accepted there, never events_token.",
    )
    operators: list[OperatorSpec] = Field(
        default_factory=list,
        max_length=1000,
        examples=[[{"name": "alice", "token": "change-me", "role": "approver"}]],
        description="Named operators of the operator API, each with its own token and role "
        "(viewer, operator, approver, admin); what they change is recorded under their name.",
        json_schema_extra={
            "accepted": "a list of {name, token, role}, role one of viewer, operator, approver, "
            "admin (as an environment variable: a JSON list)"
        },
    )
    events_token: SecretStr | None = Field(
        None,
        max_length=4096,
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
        examples=[["10.0.0.5", "10.1.0.0/16"]],
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
        json_schema_extra={
            "accepted": "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DATABASE"
        },
    )
    store_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=9,
        description="Store wait before answering 503 (Alertmanager gives up at 10 s).",
    )
    rules_dir: Path = Field(Path("rules"), description="Directory of rule YAML files.")
    flows_dir: list[Path] = Field([], description="Directories of more YAML and Python flows.")
    services_file: Path = Field(
        Path("config/services.yaml"), description="The service catalog; may be absent."
    )
    reload_check_seconds: float = Field(
        2.0, ge=0, le=3600, description="How often to look for changed rule files; 0: never."
    )
    rule_vars: dict[str, str] = Field(
        default_factory=dict,
        examples=[{"service_control_url": "http://127.0.0.1:9480"}],
        description="Values rule templates can use as `vars.<name>`.",
    )
    lease_seconds: float = Field(
        3600.0,
        gt=0,
        le=7 * DAY,
        description="A guard lease expires after this long if no final state came.",
    )
    lost_run_seconds: float = Field(
        90.0,
        ge=0,
        le=DAY,
        description="A flow run PENDING or RUNNING with no heartbeat (or state change) this "
        "long is lost: marked CRASHED and its key freed. Workers must send heartbeats more "
        "often (PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30; `responder up` does). 0: never.",
    )
    dry_run: bool = Field(
        False, description="Decide and record every decision, but never dispatch a flow run."
    )
    event_ttl: float = Field(
        3600.0,
        gt=0,
        le=7 * DAY,
        description="Seconds an event or a flow-run outcome stays a fact.",
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
    resync_interval: float = Field(
        300.0,
        ge=0,
        le=DAY,
        description="Seconds between the leader's resyncs with Alertmanager (needs "
        "alertmanager_url): firing alerts whose webhook never arrived are decided, held ones "
        "it no longer has resolve. 0: only on taking the lead.",
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
        return (init_settings, _EnvSource(settings_cls), _YamlSource(settings_cls))

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

    @field_validator(*SECRETS)
    @classmethod
    def _check_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        # An empty secret once meant "none" to one check and "set" to another: refuse it.
        if secret is not None:
            _check_credential(secret.get_secret_value(), "secret")
        return secret

    @field_validator("basic_username")
    @classmethod
    def _check_username(cls, username: str | None) -> str | None:
        if username is not None:
            _check_credential(username, "user name")
            if ":" in username:
                raise ValueError("a basic auth user name cannot contain ':'")
        return username

    @field_validator("database_url")
    @classmethod
    def _check_store_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError("not a database URL") from None
        backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
        if STORE_DRIVERS.get(backend) != driver:
            raise ValueError(
                f"the store needs an async driver: {backend}+{driver} is not one it supports"
            )
        return url

    @model_validator(mode="after")
    def _check_operators(self) -> Settings:
        # One name, one token, one operator: otherwise a record could name the wrong person.
        names: set[str] = set()
        tokens = {} if self.operator_token is None else {self.operator_token.get_secret_value(): 0}
        for n, spec in enumerate(self.operators):
            if spec.name in names:
                raise SettingError(
                    f"operators.{n}.name", spec.name, "two operators have this name", "unique names"
                )
            if spec.token.get_secret_value() in tokens:
                raise SettingError(
                    f"operators.{n}.token",
                    spec.token,
                    "this token is also another operator's or operator_token",
                    "a token of this operator's own",
                )
            names.add(spec.name)
            tokens[spec.token.get_secret_value()] = n
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            missing = "tls_keyfile" if self.tls_keyfile is None else "tls_certfile"
            raise SettingError(
                missing,
                None,
                "tls_certfile and tls_keyfile must be set together",
                "a PEM file, set with the other",
            )
        if self.tls_client_ca_file is not None and self.tls_certfile is None:
            raise SettingError(
                "tls_client_ca_file",
                self.tls_client_ca_file,
                "tls_client_ca_file (mutual TLS) needs tls_certfile and tls_keyfile",
                "a PEM file of CA certificates, with tls_certfile and tls_keyfile set",
            )
        try:
            if self.tls_certfile is not None and self.tls_keyfile is not None:
                tls.check_pair(self.tls_certfile, self.tls_keyfile)
        except ValueError as exc:
            raise SettingError(
                "tls_certfile", self.tls_certfile, str(exc), "a PEM chain and its unencrypted key"
            ) from None
        try:
            if self.tls_client_ca_file is not None:
                tls.check_client_ca(self.tls_client_ca_file)
        except ValueError as exc:
            raise SettingError(
                "tls_client_ca_file", self.tls_client_ca_file, str(exc), "PEM CA certificates"
            ) from None
        return self

    @model_validator(mode="after")
    def _check_exposure(self) -> Settings:
        if (self.basic_username is None) != (self.basic_password is None):
            missing = "basic_password" if self.basic_password is None else "basic_username"
            raise SettingError(
                missing,
                None,
                "basic_username and basic_password must be set together",
                "a non-empty value, set with the other",
            )
        if self.allow_unauthenticated_remote or _is_loopback(self.host):
            return self
        if open_kinds := auth.unprotected(self):
            raise SettingError(
                "host",
                self.host,
                f"not a loopback address, and the {' and '.join(open_kinds)} endpoints would "
                "accept anyone: beyond loopback every endpoint but /healthz, /readyz and "
                "/metrics needs credentials; the operator and events endpoints fall back to "
                "the webhook's",
                "a loopback address; or set bearer_token or basic_username/basic_password "
                "(and operators or operator_token, events_token); "
                "or allow_unauthenticated_remote=true",
            )
        return self

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


def _check_credential(value: str, what: str) -> None:
    if not value:
        raise ValueError(f"an empty {what} is not a credential: leave it unset instead")
    if value != value.strip() or not value.isprintable():
        raise ValueError(f"a {what} cannot start or end with spaces, nor hold control characters")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _EnvSource(EnvSettingsSource):
    """`RESPONDER_*` variables; a list or mapping that is not JSON is a `ConfigError`."""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            # pydantic-settings would raise its own error, without the value or the cause.
            problem = f"RESPONDER_{field_name.upper()} is not JSON ({exc})"
            error = SettingError(field_name, value, problem, _accepted(field_name, field))
            raise ConfigError(f"invalid settings: {error.line()}") from None


class _YamlSource(YamlConfigSettingsSource):
    """The settings file; one that is not a YAML mapping is a `ConfigError` naming it."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        accepted = "a YAML mapping of setting names to values"
        try:
            data = super()._read_file(file_path)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file_path}:{mark.line + 1}" if mark is not None else str(file_path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(
                f"invalid settings: file {where}: not valid YAML ({problem}); accepted: {accepted}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"invalid settings: file {file_path}: cannot read it ({exc})"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"invalid settings: file {file_path}: a {type(data).__name__}; accepted: {accepted}"
            )
        return data


def _shown(field: str, value: Any) -> str:
    """A value as an error shows it: never a secret, never much of anything."""
    if value is None:
        return "(unset)"
    if field in SECRETS or field.endswith(".token") or field == "operators":
        return "(secret, not shown)"
    if field in URL_FIELDS and isinstance(value, str):
        value = without_credentials(value)
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 200 else f"{text[:200]}..."


def _accepted(name: str, field: FieldInfo | None, *, nested: bool = False) -> str:
    """What a field accepts, from its type, bounds and example."""
    if nested and name == "operators":
        return f"the fields {', '.join(OperatorSpec.model_fields)}"
    if field is None:
        return f"one of the settings {', '.join(Settings.model_fields)}"
    kinds = {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "text",
        Path: "a path",
        SecretStr: "a non-empty secret without surrounding spaces",
    }
    origin = getattr(field.annotation, "__origin__", None)
    types = [t for t in (get_args(field.annotation) or (field.annotation,)) if t is not type(None)]
    parts = [kinds.get(t, "") for t in types] if types else []
    words = " or ".join(p for p in parts if p)
    if origin is list:
        words = "a list (as an environment variable: a JSON list)"
    elif origin is dict:
        words = "a mapping of names to text (as an environment variable: a JSON object)"
    bounds = []
    for constraint in field.metadata:
        for attribute, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if (limit := getattr(constraint, attribute, None)) is not None:
                bounds.append(f"{sign} {limit:g}")
        if (length := getattr(constraint, "max_length", None)) is not None:
            bounds.append(f"at most {length} {'entries' if origin is list else 'characters'}")
    if isinstance(field.json_schema_extra, dict) and "accepted" in field.json_schema_extra:
        words = str(field.json_schema_extra["accepted"])  # what the type does not tell
    accepted = ", ".join([words or "a value", *([" and ".join(bounds)] if bounds else [])])
    if field.examples:
        accepted += f", e.g. {json.dumps(field.examples[0])}"
    if type(None) in get_args(field.annotation):
        accepted += "; or unset"
    return accepted


def _line(err: Any) -> str:
    """One pydantic error as `field … value … : problem; accepted: …`."""
    error = err.get("ctx", {}).get("error")
    if isinstance(error, SettingError):
        return error.line()
    name = ".".join(str(p) for p in err["loc"]) or "settings"
    top = str(err["loc"][0]) if err["loc"] else ""
    if top == "operators" and err["loc"][-1] in ("name", "role"):
        top = name  # an operator's name or role is shown; its token, or all of it, never
    problem = str(error) if error is not None else err["msg"]
    if err["type"] == "extra_forbidden" and len(err["loc"]) > 1:
        problem, accepted = "not a field of this entry", _accepted(top, None, nested=True)
        return (
            f"field {name} value {_shown(top, err.get('input'))}: {problem}; accepted: {accepted}"
        )
    if err["type"] == "extra_forbidden":
        shown = _shown(top, err.get("input"))
        close = difflib.get_close_matches(name, Settings.model_fields, n=1)
        problem = f"not a setting (did you mean {close[0]}?)" if close else "not a setting"
        return f"field {name} value {shown}: {problem}; accepted: {_accepted(name, None)}"
    field = str(err["loc"][0]) if err["loc"] else ""
    accepted = _accepted(field, Settings.model_fields.get(field))
    return f"field {name} value {_shown(top, err.get('input'))}: {problem}; accepted: {accepted}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings; any invalid one is a `ConfigError` of lines
    `invalid settings: field … value … : problem; accepted: …`."""
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
        lines = [f"invalid settings: {_line(err)}" for err in exc.errors(include_url=False)]
        raise ConfigError("\n".join(lines)) from exc
