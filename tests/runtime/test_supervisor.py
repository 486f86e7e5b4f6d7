"""What `responder up` tells its flow runner (`worker_environment`): where Responder is, the
token its runs present when they ask before acting, and heartbeats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from responder.runtime.supervisor import worker_environment
from tests.helpers import make_settings


def test_the_runner_fences_its_runs_and_sends_heartbeats(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESPONDER_TOKEN", raising=False)
    monkeypatch.setenv("RESPONDER_FENCING", "off")  # never for up's runner
    env = worker_environment(make_settings(tmp_path, rules_dir, port=9471))
    assert env == {
        "RESPONDER_URL": "http://127.0.0.1:9471",
        "RESPONDER_FENCING": "on",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }


def test_a_receiver_on_every_address_is_asked_on_loopback(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESPONDER_TOKEN", raising=False)
    settings = make_settings(
        tmp_path, rules_dir, host="0.0.0.0", port=9472, bearer_token="hook", operator_token="op"
    )
    env = worker_environment(settings)
    assert env["RESPONDER_URL"] == "http://127.0.0.1:9472"
    assert env["RESPONDER_TOKEN"] == "op"


def test_the_runner_s_token_comes_from_the_environment_or_the_settings(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESPONDER_TOKEN", raising=False)
    operators = [{"name": "runner", "token": "tok-runner", "role": "viewer"}]
    named = make_settings(tmp_path, rules_dir, operators=operators, bearer_token="hook")
    assert worker_environment(named)["RESPONDER_TOKEN"] == "tok-runner"
    webhook_only = make_settings(tmp_path, rules_dir, bearer_token="hook")
    assert worker_environment(webhook_only)["RESPONDER_TOKEN"] == "hook"
    monkeypatch.setenv("RESPONDER_TOKEN", "mine")
    assert worker_environment(named)["RESPONDER_TOKEN"] == "mine"


def test_the_runner_takes_the_flows_of_flows_dir_too(tmp_path: Path, rules_dir: Path) -> None:
    more = tmp_path / "more"
    settings = make_settings(tmp_path, rules_dir, flows_dir=[more, Path("relative")])
    env = worker_environment(settings)
    assert env["RESPONDER_FLOWS_PATH"] == f"{more}{os.pathsep}{Path('relative').resolve()}"
