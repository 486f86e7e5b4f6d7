"""Settings: every value bounded, every secret a real one, every error one line naming the
field, the value and what is accepted; from the `responder` command, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from responder.exceptions import ConfigError
from responder.intake.auth import Credentials, Operator
from responder.settings import Settings, load_settings
from tests.helpers import ROOT


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "responder.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n")
    return path


def numeric_fields() -> list[str]:
    return [
        name for name, field in Settings.model_fields.items() if field.annotation in (int, float)
    ]


@pytest.mark.parametrize("name", numeric_fields())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_duration_and_size_is_finite(config: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid settings: field {name} value "):
        load_settings(config, **{name: float(value)})


@pytest.mark.parametrize("name", numeric_fields())
def test_every_duration_and_size_has_bounds(name: str) -> None:
    constraints = Settings.model_fields[name].metadata
    assert any(hasattr(c, "le") or hasattr(c, "lt") for c in constraints), name
    assert any(hasattr(c, "ge") or hasattr(c, "gt") for c in constraints), name


def test_an_infinite_lease_is_refused_with_what_is_accepted(config: Path) -> None:
    config.write_text(config.read_text() + "lease_seconds: .inf\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value) == (
        "invalid settings: field lease_seconds value inf: Input should be a finite number; "
        "accepted: a finite number, > 0 and <= 604800"
    )
    with pytest.raises(ConfigError, match=r"field event_ttl value 1000000000\.0: .* <= 604800"):
        load_settings(config, lease_seconds=60, event_ttl=1e9)


@pytest.mark.parametrize(
    "secrets",
    [
        {"bearer_token": ""},
        {"operator_token": ""},
        {"events_token": ""},
        {"bearer_token": "x", "events_token": " padded"},
        {"basic_username": "am", "basic_password": ""},
        {"basic_username": "", "basic_password": "pw"},
        {"basic_username": "a:m", "basic_password": "pw"},
        {"bearer_token": "line\nbreak"},
    ],
)
def test_an_empty_or_unusable_secret_is_an_invalid_setting(
    config: Path, secrets: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match=r"^invalid settings: field (bearer|basic|operator|ev)"):
        load_settings(config, host="127.0.0.1", **secrets)


def test_an_invalid_secret_is_never_shown(config: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config, bearer_token="x", events_token=" hunter2 ")
    assert "hunter2" not in str(info.value)
    assert "field events_token value (secret, not shown)" in str(info.value)


def test_credentials_refuse_an_empty_secret() -> None:
    # The one definition of "configured": set. An empty secret cannot reach here.
    with pytest.raises(ValueError, match="empty secret"):
        Credentials(SecretStr(""))
    with pytest.raises(ValueError, match="empty secret"):
        Credentials(username="am", password=SecretStr(""))


@pytest.mark.parametrize(
    ("secrets", "open_kinds"),
    [
        ({}, "webhook and operator and events"),
        ({"operator_token": "op"}, "webhook and events"),
        ({"events_token": "ev"}, "webhook and operator"),
        ({"operator_token": "op", "events_token": "ev"}, "webhook"),
    ],
)
def test_beyond_loopback_start_up_refuses_any_open_endpoint(
    config: Path, secrets: dict[str, str], open_kinds: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config, host="0.0.0.0", **secrets)
    assert str(info.value).startswith("invalid settings: field host value '0.0.0.0': ")
    assert f"the {open_kinds} endpoints would accept anyone" in str(info.value)
    assert "accepted: a loopback address; or set bearer_token" in str(info.value)
    opted_in = load_settings(config, host="0.0.0.0", allow_unauthenticated_remote=True, **secrets)
    assert opted_in.host == "0.0.0.0"


def test_named_operators_come_from_the_file_or_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text(
        config.read_text()
        + "operators:\n  - {name: alice, token: a-token, role: approver}\n"
        + "  - {name: bob, token: b-token, role: viewer}\n"
    )
    settings = load_settings(config, bearer_token="wh")
    assert [(o.name, o.role) for o in settings.operators] == [
        ("alice", "approver"),
        ("bob", "viewer"),
    ]
    credentials = Credentials.for_operators(settings)
    alice = credentials.identify("Bearer a-token")
    assert alice is not None and (alice.name, alice.role) == ("alice", "approver")
    assert credentials.identify("Bearer wh") is None  # the webhook's is no operator's
    monkeypatch.setenv(
        "RESPONDER_OPERATORS", '[{"name": "carol", "token": "c-token", "role": "admin"}]'
    )
    assert [o.name for o in load_settings(config).operators] == ["carol"]
    # Alone, operator_token is one admin; with named operators, an admin beside them.
    shared = Credentials.for_operators(load_settings(config, operator_token="op"))
    assert shared.identify("Bearer op") == Operator("operator_token", "admin")
    assert shared.identify("Bearer c-token") == Operator("carol", "admin")
    # Beyond loopback, named operators protect the operator API.
    monkeypatch.delenv("RESPONDER_OPERATORS")
    with pytest.raises(ConfigError, match="the webhook and events endpoints would accept anyone"):
        load_settings(config, host="0.0.0.0")


@pytest.mark.parametrize(
    ("operators", "line"),
    [
        (
            [{"name": "a", "token": "t", "role": "boss"}],
            "field operators.0.role value 'boss': Input should be 'viewer', 'operator', "
            "'approver' or 'admin'; accepted: a list of {name, token, role}",
        ),
        (
            [{"name": "a", "token": " hunter2", "role": "admin"}],
            "field operators.0.token value (secret, not shown): a token cannot start or end",
        ),
        (
            [
                {"name": "a", "token": "t", "role": "admin"},
                {"name": "a", "token": "u", "role": "viewer"},
            ],
            "field operators.1.name value 'a': two operators have this name; "
            "accepted: unique names",
        ),
        (
            [
                {"name": "a", "token": "hunter2", "role": "admin"},
                {"name": "b", "token": "hunter2", "role": "viewer"},
            ],
            "field operators.1.token value (secret, not shown): this token is also another",
        ),
        (
            [{"name": "a", "tokn": "hunter2", "role": "admin"}],
            "field operators.0.tokn value (secret, not shown): not a field of this entry; "
            "accepted: the fields name, token, role",
        ),
        (
            [{"name": "a b", "token": "t", "role": "admin"}],
            "field operators.0.name value 'a b': String should match pattern",
        ),
    ],
)
def test_an_invalid_operator_is_one_line_naming_it_never_its_token(
    config: Path, operators: list[dict[str, str]], line: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config, operators=operators)
    lines = str(info.value).splitlines()
    assert any(shown.startswith(f"invalid settings: {line}") for shown in lines), lines
    assert all(shown.startswith("invalid settings: field operators.") for shown in lines)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://responder@127.0.0.1/test",
        "postgresql+psycopg2://responder@127.0.0.1/test",
        "sqlite:///responder.db",
        "mysql+aiomysql://responder@127.0.0.1/test",
        "not a url",
    ],
)
def test_a_store_url_without_its_async_driver_is_an_invalid_setting(config: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config, database_url=url)
    assert str(info.value).startswith(f"invalid settings: field database_url value {url!r}: ")
    assert "accepted: sqlite+aiosqlite:///PATH or postgresql+asyncpg://" in str(info.value)


def test_the_store_urls_that_work_are_accepted(config: Path) -> None:
    for url in ("sqlite+aiosqlite:///x.db", "postgresql+asyncpg://u@127.0.0.1/test"):
        assert load_settings(config, database_url=url).store_url == url


# --- from the command line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml", "env", "expected"),
    [
        ("", {"RESPONDER_TRUSTED_PROXIES": "10.0.0.1"}, "field trusted_proxies value '10.0.0.1'"),
        ("", {"RESPONDER_RULE_VARS": '{"a": "b"'}, 'field rule_vars value \'{"a": "b"\''),
        ("", {"RESPONDER_RULE_VARS": "a=b"}, "field rule_vars value 'a=b'"),
        (
            "",
            {"RESPONDER_DATABASE_URL": "postgresql://responder@127.0.0.1/test"},
            "field database_url value 'postgresql://responder@127.0.0.1/test'",
        ),
        ("port: [\n", {}, "file {config}:2: not valid YAML"),
        ("- a list\n", {}, "file {config}: a list; accepted: a YAML mapping"),
        ("lease_seconds: .inf\n", {}, "field lease_seconds value inf"),
        ("event_ttl: .nan\n", {}, "field event_ttl value nan"),
        ("bearer_token: ''\n", {}, "field bearer_token value (secret, not shown)"),
        ("host: 0.0.0.0\nevents_token: ev\n", {}, "field host value '0.0.0.0'"),
        (
            "hots: 0.0.0.0\n",
            {},
            "field hots value '0.0.0.0': not a setting (did you mean host?); accepted: one of",
        ),
    ],
    ids=[
        "proxies-not-json",
        "rule-vars-mangled",
        "rule-vars-not-json",
        "postgresql-without-driver",
        "yaml-error",
        "yaml-not-a-mapping",
        "lease-inf",
        "ttl-nan",
        "empty-token",
        "open-operator-api",
        "unknown-setting",
    ],
)
def test_an_invalid_setting_is_one_line_from_the_cli_never_a_traceback(
    tmp_path: Path, yaml: str, env: dict[str, str], expected: str
) -> None:
    config = tmp_path / "responder.yaml"
    config.write_text(yaml)
    clean: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    # Were the settings accepted, start-up would stop at the missing rules directory instead.
    clean.update(RESPONDER_RULES_DIR=str(tmp_path / "nowhere"), RESPONDER_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "responder", "serve", "--config", str(config)],
        env={**clean, "PYTHONPATH": str(ROOT), "COLUMNS": "80", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("error: invalid settings: "), line
    assert expected.replace("{config}", str(config)) in line
    assert "accepted: " in line


@pytest.mark.parametrize(
    "overrides",
    [
        {"database_url": "postgresql+psycopg://resp:hunter2@db/resp"},
        {"database_url": "postgresql://resp:hunter2@db/resp"},
    ],
)
def test_a_password_in_a_url_setting_is_never_shown(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as failed:
        load_settings(**overrides)
    assert "hunter2" not in str(failed.value)
    assert "***@" in str(failed.value)
