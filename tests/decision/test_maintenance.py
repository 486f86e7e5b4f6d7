"""Maintenance windows: when each is in effect, and whom it covers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from responder.decision.maintenance import MaintenanceWindow, covering


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_one_off_window_is_in_effect_from_start_to_end() -> None:
    w = MaintenanceWindow(
        name="w",
        reason="r",
        start="2026-03-01T10:00:00Z",
        end="2026-03-01T12:00:00Z",
        hosts=["db-1"],
    )
    assert w.occurrence(at("2026-03-01T09:59:59")) is None
    assert w.occurrence(at("2026-03-01T10:00:00")) == (
        at("2026-03-01T10:00"),
        at("2026-03-01T12:00"),
    )
    assert w.occurrence(at("2026-03-01T12:00:00")) is None
    assert w.next_start(at("2026-03-01T09:00")) == at("2026-03-01T10:00")


def test_a_weekly_window_follows_its_time_zone_across_daylight_saving() -> None:
    # Sundays 02:00-03:00 in New York: 07:00 UTC in winter, 06:00 UTC in summer.
    w = MaintenanceWindow(
        name="w",
        reason="r",
        start="2026-01-04T02:00:00",
        end="2026-01-04T03:00:00",
        timezone="America/New_York",
        recurrence="RRULE:FREQ=WEEKLY;BYDAY=SU",
        match=['service="db"'],
    )
    assert w.occurrence(at("2026-01-11T07:30")) is not None
    assert w.occurrence(at("2026-01-11T06:30")) is None
    assert w.occurrence(at("2026-07-05T06:30")) == (at("2026-07-05T06:00"), at("2026-07-05T07:00"))
    assert w.occurrence(at("2026-07-06T06:30")) is None  # a Monday
    assert w.occurrence(at("2025-12-28T07:30")) is None  # before the series starts
    assert w.next_start(at("2026-01-04T08:00")) == at("2026-01-11T07:00")


def test_a_series_ends_with_its_until() -> None:
    w = MaintenanceWindow(
        name="w",
        reason="r",
        start="2026-01-01T00:00:00Z",
        end="2026-01-01T01:00:00Z",
        recurrence="FREQ=DAILY;UNTIL=20260103T000000Z",
        hosts=["h"],
    )
    assert w.occurrence(at("2026-01-03T00:30")) is not None
    assert w.occurrence(at("2026-01-04T00:30")) is None


def test_every_selector_given_must_agree() -> None:
    w = MaintenanceWindow(
        name="w",
        reason="r",
        end="2030-01-01T00:00:00Z",
        match=['env=~"prod|staging"'],
        services=["checkout"],
        hosts=["MX-1"],
    )
    labels = {"env": "prod", "service": "checkout"}
    assert w.covers(labels, "mx-1")
    assert not w.covers(labels, "mx-2")
    assert not w.covers({**labels, "env": "dev"}, "mx-1")
    assert not w.covers({"env": "prod", "service": "search"}, "mx-1")
    now = at("2026-01-01T00:00")
    assert covering([w], labels, "MX-1:9100", now) == (w, at("2030-01-01T00:00"))
    assert covering([w], labels, "mx-2", now) is None


@pytest.mark.parametrize(
    ("fields", "field", "needle"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"recurrence": "FREQ=SECONDLY"}, "recurrence", "FREQ one of HOURLY"),
        ({"recurrence": "FREQ=WEEKLY;BYDAY=XX"}, "recurrence", "not an RRULE"),
        ({"recurrence": "FREQ=DAILY;DTSTART=20260101T000000Z"}, "recurrence", "without DTSTART"),
        ({"match": ['instance=~"("']}, "match.0", "invalid regular expression"),
        ({"end": "2026-01-01T09:00:00Z"}, "", "end must be after start"),
        ({"hosts": []}, "", "a window needs match, services or hosts"),
        ({"name": "Bad Name"}, "name", "pattern"),
        ({"start": None, "recurrence": "FREQ=DAILY"}, "", "needs its start"),
    ],
)
def test_a_bad_window_names_its_field(fields: dict[str, object], field: str, needle: str) -> None:
    spec = {
        "name": "w",
        "reason": "r",
        "start": "2026-01-01T10:00:00Z",
        "end": "2026-01-01T11:00:00Z",
        "hosts": ["h"],
        **fields,
    }
    with pytest.raises(ValidationError) as info:
        MaintenanceWindow.model_validate(spec)
    [error] = info.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert needle in error["msg"], error["msg"]
