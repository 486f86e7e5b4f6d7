"""The stored Alertmanager captures still have the shape a real Alertmanager sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.capture import SCENARIOS, TOKEN, capture, write
from tests.helpers import FIXTURES, fixture_json

pytestmark = pytest.mark.alertmanager


def shape(value: Any) -> Any:
    """Keys and value types, recursively; label and annotation values do not count."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def alert_shape(alert: dict[str, Any]) -> dict[str, Any]:
    return {**shape(alert), "labels": "labels", "annotations": "annotations"}


def test_a_fresh_capture_matches_the_stored_fixtures(tmp_path: Path) -> None:
    captured = capture(tmp_path)
    assert set(captured) == {scenario.name for scenario in SCENARIOS}
    for name, note in captured.items():
        stored, fresh = fixture_json(name), note.payload
        assert set(fresh) == set(stored), name
        assert (fresh["version"], fresh["status"]) == (stored["version"], stored["status"]), name
        assert len(fresh["alerts"]) == len(stored["alerts"]), name
        for new, old in zip(fresh["alerts"], stored["alerts"], strict=True):
            assert alert_shape(new) == alert_shape(old), name
            assert new["status"] == old["status"], name
        headers = {key.lower(): value for key, value in note.headers}
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("Alertmanager/")
    bearer = dict(captured["firing_single_servicedown_bearer_auth"].headers)
    assert bearer["Authorization"] == f"Bearer {TOKEN}"
    resolved = captured["resolved_single_servicedown"].payload["alerts"][0]
    assert not resolved["endsAt"].startswith("0001")


def test_write_keeps_the_bytes_and_indexes_each_capture(tmp_path: Path) -> None:
    from tests.capture import Notification

    body = (FIXTURES / "firing_single_servicedown.json").read_bytes()
    note = Notification("/webhook", [("Content-Type", "application/json")], body, "now")
    write({"firing_single_servicedown": note}, tmp_path)
    assert (tmp_path / "firing_single_servicedown.json").read_bytes() == body
    import json

    entry = json.loads((tmp_path / "index.json").read_text())["firing_single_servicedown"]
    assert entry["alerts"] == ["ServiceDown/host-1:firing"]
    assert entry["headers"] == [["Content-Type", "application/json"]]
