"""Responder's Alertmanager client against a real Alertmanager (Debian
prometheus-alertmanager): a silence for one alert silences that alert only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from responder.orchestration.alertmanager import Alertmanager, equality_filter, exact_matchers
from tests import servers
from tests.helpers import free_port, wait_for


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    with servers.alertmanager(tmp_path, free_port(), servers.ROUTES_NOWHERE) as url:
        yield url


def test_empty_values_are_left_out_and_supersets_excluded() -> None:
    mine = {"alertname": "ServiceDown", "instance": "h1", "team": ""}
    held = [
        {"alertname": "ServiceDown", "instance": "h1"},  # this alert, as Alertmanager has it
        {"alertname": "ServiceDown", "instance": "h1", "service": "api"},
        {"alertname": "ServiceDown", "instance": "h1", "service": "web", "team": "x"},
        {"alertname": "ServiceDown", "instance": "h2", "zone": "a"},  # not matched anyway
    ]
    assert [(m["name"], m["value"]) for m in exact_matchers(mine, held)] == [
        ("alertname", "ServiceDown"),
        ("instance", "h1"),
        ("service", ""),
    ]
    with pytest.raises(ValueError, match="all empty"):
        exact_matchers({"team": ""}, held)


@pytest.mark.alertmanager
async def test_silencing_one_alert_leaves_the_others_alone(alertmanager: str) -> None:
    now = datetime.now(UTC).isoformat()
    sent = [
        {"alertname": "ServiceDown", "instance": "h1"},
        {"alertname": "ServiceDown", "instance": "h1", "service": "api"},
        {"alertname": "ServiceDown", "instance": "h1", "service": "web"},
    ]
    async with httpx.AsyncClient(base_url=alertmanager) as http:
        response = await http.post(
            "/api/v2/alerts", json=[{"labels": labels, "startsAt": now} for labels in sent]
        )
        assert response.status_code == 200, response.text

        async def states() -> dict[str, str] | None:
            listed = (await http.get("/api/v2/alerts")).json()
            found = {a["labels"].get("service", "-"): a["status"]["state"] for a in listed}
            return found if len(found) == 3 else None

        await wait_for(states)
        client = Alertmanager(alertmanager)
        try:
            # The webhook carried `team=""`: in Alertmanager, that is "no team label".
            labels = {"alertname": "ServiceDown", "instance": "h1", "team": ""}
            await client.silence(labels, 600, "remediating")
        finally:
            await client.close()

        async def settled() -> dict[str, str] | None:
            found = await states()
            return found if found and found["-"] == "suppressed" else None

        assert await wait_for(settled) == {"-": "suppressed", "api": "active", "web": "active"}


def test_a_filter_quotes_what_would_end_the_quotes() -> None:
    assert equality_filter("team", 'a"b\\c\nd') == 'team="a\\"b\\\\c\\nd"'
    with pytest.raises(ValueError, match="label name"):
        equality_filter('team="x",job', "y")


# Label values are alert data: quotes, backslashes, a newline, and an attempt to add a matcher.
HOSTILE_VALUES = ['a"b\\c', 'a"b', "a\\", 'a\\"b\\c', "x\ny", 'z",instance=~".*', "plain"]


@pytest.mark.alertmanager
async def test_listing_by_labels_matches_each_hostile_value_exactly(alertmanager: str) -> None:
    now = datetime.now(UTC).isoformat()
    sent = [
        {"alertname": "Odd", "instance": f"h{i}", "team": v} for i, v in enumerate(HOSTILE_VALUES)
    ]
    sent.append({"alertname": "Odd", "instance": "no-team"})
    async with httpx.AsyncClient(base_url=alertmanager) as http:
        response = await http.post(
            "/api/v2/alerts", json=[{"labels": labels, "startsAt": now} for labels in sent]
        )
        assert response.status_code == 200, response.text

        async def all_listed() -> bool:
            return len((await http.get("/api/v2/alerts")).json()) == len(sent)

        await wait_for(all_listed)
    client = Alertmanager(alertmanager)
    try:
        for i, value in enumerate(HOSTILE_VALUES):
            found = await client.alerts("null", {"alertname": "Odd", "team": value})
            assert [a["labels"]["instance"] for a in found] == [f"h{i}"], value
        # An empty value: without that label, as in a silence's matchers.
        found = await client.alerts(None, {"team": ""})
        assert [a["labels"]["instance"] for a in found] == ["no-team"]
        assert await client.alerts("another", {"alertname": "Odd"}) == []
    finally:
        await client.close()


@pytest.mark.alertmanager
async def test_a_silence_is_extended_and_one_lifted_by_hand_stays_lifted(
    alertmanager: str,
) -> None:
    client = Alertmanager(alertmanager)
    try:
        labels = {"alertname": "ServiceDown", "instance": "h9"}
        first = await client.silence(labels, 60, "remediating")
        extended = await client.extend(first, 3600)
        assert extended is not None
        async with httpx.AsyncClient(base_url=alertmanager) as http:
            silence = (await http.get(f"/api/v2/silence/{extended}")).json()
            ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
            assert (ends - datetime.now(UTC)).total_seconds() > 3000
            assert silence["status"]["state"] == "active"
            assert silence["comment"] == "remediating"
            assert [m["value"] for m in silence["matchers"]] == ["ServiceDown", "h9"]
            await client.lift(extended)
        assert await client.extend(extended, 3600) is None
        assert await client.extend("00000000-0000-4000-8000-000000000000", 60) is None
    finally:
        await client.close()
