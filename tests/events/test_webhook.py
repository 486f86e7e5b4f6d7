from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from responder.events.webhook import AlertmanagerWebhook
from tests.helpers import all_fixture_names, fixture_body, fixture_json


@pytest.mark.parametrize("name", all_fixture_names())
def test_every_captured_payload_validates(name: str) -> None:
    webhook = AlertmanagerWebhook.model_validate_json(fixture_body(name))
    raw = fixture_json(name)
    assert webhook.group_key == raw["groupKey"]
    assert [a.fingerprint for a in webhook.alerts] == [a["fingerprint"] for a in raw["alerts"]]
    assert [a.status for a in webhook.alerts] == [a["status"] for a in raw["alerts"]]


def test_alert_identity_is_fingerprint_and_start() -> None:
    first = AlertmanagerWebhook.model_validate_json(fixture_body("firing_single_servicedown"))
    resolved = AlertmanagerWebhook.model_validate_json(fixture_body("resolved_single_servicedown"))
    assert first.alerts[0].incident == resolved.alerts[0].incident
    assert resolved.alerts[0].ends_at is not None
    again = AlertmanagerWebhook.model_validate_json(
        fixture_body("firing_single_servicedown_bearer_auth")
    )
    # Same labels, same fingerprint; a later start makes it a new incident.
    assert again.alerts[0].fingerprint == first.alerts[0].fingerprint
    assert again.alerts[0].incident != first.alerts[0].incident


def test_stale_resolved_alert_keeps_its_original_identity() -> None:
    partial = AlertmanagerWebhook.model_validate_json(
        fixture_body("firing_group_partially_resolved")
    )
    stale = AlertmanagerWebhook.model_validate_json(
        fixture_body("firing_group_with_stale_resolved_alert")
    )
    assert stale.status == "firing"
    resolved_in_stale = [a for a in stale.alerts if a.status == "resolved"]
    assert len(resolved_in_stale) == 1
    assert resolved_in_stale[0].fingerprint == "4c49c27c50dac262"
    # Same labels as host-1's first incident, resolved earlier: a different incident.
    [earlier] = [a for a in partial.alerts if a.status == "resolved"]
    assert earlier.fingerprint == resolved_in_stale[0].fingerprint
    assert earlier.incident != resolved_in_stale[0].incident


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(version="3"), "version"),
        (lambda d: d.update(alerts=[]), "alerts"),
        (lambda d: d["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda d: d["alerts"][0].update(fingerprint="not hex!"), "alerts.0.fingerprint"),
        (lambda d: d["alerts"][0].pop("startsAt"), "alerts.0.startsAt"),
        (lambda d: d["alerts"][0]["labels"].update({"bad-name": "x"}), "alerts.0.labels.bad-name"),
    ],
)
def test_schema_errors_name_the_field(mutate: object, field: str) -> None:
    data = fixture_json("firing_single_servicedown")
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ValidationError) as info:
        AlertmanagerWebhook.model_validate(data)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(loc.startswith(field) for loc in locs), locs


@pytest.mark.parametrize("starts_at", ["0001-01-01T00:00:00", "2026-11-25T23:17:23", "2026-11-25"])
def test_a_start_without_an_offset_is_refused(starts_at: str) -> None:
    # Found by tests/test_fuzz.py: a naive 0001-01-01 start has no timestamp, which broke the
    # engine loop on every retry; Alertmanager always sends an offset.
    data = fixture_json("firing_single_servicedown")
    data["alerts"][0]["startsAt"] = starts_at
    with pytest.raises(ValidationError) as info:
        AlertmanagerWebhook.model_validate_json(json.dumps(data))
    assert [e["loc"] for e in info.value.errors()] == [("alerts", 0, "startsAt")]
