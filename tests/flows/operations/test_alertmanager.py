"""`alertmanager.silence` and `alertmanager.expire_silence` against a real Alertmanager
(Debian prometheus-alertmanager), run as flow steps on the test Prefect server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.runtime import flow_run
from pydantic import ValidationError

from flows.operations import OPERATIONS
from flows.operations.alertmanager import (
    ExpireSilence,
    Silence,
    SilenceExpired,
    SilenceRequest,
    alertmanager_expire_silence,
    alertmanager_silence,
)
from tests import servers
from tests.helpers import free_port

pytestmark = [pytest.mark.alertmanager, pytest.mark.prefect]


@pytest.fixture
def alertmanager(prefect_api_url: str, tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager that routes every alert nowhere."""
    with servers.alertmanager(tmp_path, free_port(), servers.ROUTES_NOWHERE) as url:
        yield url


@flow
def silence_host(url: str, host: str) -> tuple[Silence, str]:
    """Silence one host's alerts for ten minutes; also return this flow run's id."""
    silence = alertmanager_silence(
        SilenceRequest(
            url=url,
            matchers={"alertname": "ServiceDown", "instance": host},
            duration_seconds=600,
            comment="restarting checkout",
        )
    )
    return silence, str(flow_run.id)


@flow
def expire(url: str, silence_id: str) -> SilenceExpired:
    return alertmanager_expire_silence(ExpireSilence(url=url, silence_id=silence_id))


def get_silence(alertmanager: str, silence_id: str) -> dict[str, Any]:
    response = httpx.get(f"{alertmanager}/api/v2/silence/{silence_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_silence_links_to_its_flow_run_until_it_is_expired(alertmanager: str) -> None:
    silence, run_id = silence_host(alertmanager, "host-7")

    stored = get_silence(alertmanager, silence.silence_id)
    assert stored["status"]["state"] == "active"
    assert sorted(stored["matchers"], key=lambda m: m["name"]) == [
        {"name": "alertname", "value": "ServiceDown", "isRegex": False, "isEqual": True},
        {"name": "instance", "value": "host-7", "isRegex": False, "isEqual": True},
    ]
    assert stored["createdBy"] == "responder"
    assert stored["comment"].startswith("restarting checkout (flow run: http")
    assert stored["comment"].endswith(f"/flow-runs/flow-run/{run_id})")
    ends_at = datetime.fromisoformat(stored["endsAt"].replace("Z", "+00:00"))
    assert abs((ends_at - silence.ends_at).total_seconds()) < 1

    assert expire(alertmanager, silence.silence_id) == SilenceExpired(
        silence_id=silence.silence_id, expired=True
    )
    assert get_silence(alertmanager, silence.silence_id)["status"]["state"] == "expired"


def test_expiring_an_expired_silence_succeeds(alertmanager: str) -> None:
    silence, _ = silence_host(alertmanager, "host-8")
    expire(alertmanager, silence.silence_id)

    assert expire(alertmanager, silence.silence_id).expired


def test_expiring_a_silence_alertmanager_never_had_counts_as_expired(alertmanager: str) -> None:
    unknown = str(uuid.uuid4())

    assert expire(alertmanager, unknown) == SilenceExpired(silence_id=unknown, expired=False)


@flow
def call_operation(name: str, parameters: dict[str, Any]) -> Any:
    """Call an operation by its registered name, as YAML flows do."""
    return OPERATIONS[name](parameters)


SILENCE = {"matchers": {"instance": "host-7"}, "duration_seconds": 60, "comment": "c"}


@pytest.mark.parametrize(
    ("name", "parameters", "error"),
    [
        ("alertmanager.silence", {**SILENCE, "matchers": {"bad-name": "x"}}, "bad-name"),
        ("alertmanager.silence", {**SILENCE, "matchers": {"0instance": "x"}}, "0instance"),
        ("alertmanager.silence", {**SILENCE, "matchers": {}}, "at least 1 item"),
        # `team=""` would match every alert without a team label in Alertmanager.
        ("alertmanager.silence", {**SILENCE, "matchers": {"instance": "h", "team": ""}}, "team"),
        ("alertmanager.silence", {**SILENCE, "duration_seconds": 8 * 86_400}, "604800"),
        ("alertmanager.expire_silence", {"silence_id": "../silences"}, "silence_id"),
    ],
)
def test_invalid_parameters_are_refused_before_alertmanager_is_called(
    alertmanager: str, name: str, parameters: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        call_operation(name, {"url": alertmanager, **parameters})

    assert httpx.get(f"{alertmanager}/api/v2/silences").json() == []
