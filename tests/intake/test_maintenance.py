"""`/api/v1/maintenance`: add, list and remove maintenance windows, with operator roles,
against the real app and a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from responder.runtime.service import Service
from tests.helpers import app_client, make_settings

URL = "/api/v1/maintenance"
OPERATOR = {"authorization": "Bearer op-token"}
VIEWER = {"authorization": "Bearer view-token"}
WINDOW = {
    "name": "db-patching",
    "reason": "OPS-42 kernel upgrade",
    "start": "2026-01-01T00:00:00Z",
    "end": "2099-01-01T00:00:00Z",
    "match": ['service="db"'],
    "hosts": ["db-1"],
}


@pytest.fixture
async def client(tmp_path: Path, rules_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "services.yaml").write_text(
        "maintenance:\n  - {labels: {instance: host-9}, until: 2099-01-01T00:00:00Z, reason: x}\n"
    )
    operators = [
        {"name": "alice", "token": "op-token", "role": "operator"},
        {"name": "victor", "token": "view-token", "role": "viewer"},
    ]
    service = Service(make_settings(tmp_path, rules_dir, operators=operators))
    await service.start()
    async with app_client(service) as http:
        yield http
    await service.stop()


async def test_a_window_added_is_listed_in_effect_and_removed(client: httpx.AsyncClient) -> None:
    added = await client.post(URL, json=WINDOW, headers=OPERATOR)
    assert added.status_code == 201, added.text
    assert added.json()["window"]["in_effect"] is True

    listed = (await client.get(URL, headers=VIEWER)).json()["windows"]
    by_name = {w["name"]: w for w in listed}
    assert by_name["catalog-1"]["source"] == "catalog"
    mine = by_name["db-patching"]
    assert (mine["source"], mine["created_by"], mine["hosts"]) == ("api", "alice", ["db-1"])
    assert mine["in_effect_until"] == 4070908800.0

    again = await client.post(URL, json=WINDOW, headers=OPERATOR)
    assert again.status_code == 409 and again.json()["field"] == "name"
    clash = await client.post(URL, json={**WINDOW, "name": "catalog-1"}, headers=OPERATOR)
    assert clash.status_code == 409

    removed = await client.delete(f"{URL}/db-patching", headers=OPERATOR)
    assert removed.json() == {"removed": "db-patching"}
    assert (await client.delete(f"{URL}/db-patching", headers=OPERATOR)).status_code == 404
    assert (await client.delete(f"{URL}/catalog-1", headers=OPERATOR)).status_code == 404
    assert [w["name"] for w in (await client.get(URL, headers=VIEWER)).json()["windows"]] == [
        "catalog-1"
    ]


async def test_viewers_read_but_do_not_change_windows(client: httpx.AsyncClient) -> None:
    assert (await client.post(URL, json=WINDOW, headers=VIEWER)).status_code == 403
    assert (await client.delete(f"{URL}/x", headers=VIEWER)).status_code == 403
    assert (await client.get(URL)).status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"name": "../etc"}, "name"),
        ({"timezone": "Nowhere/City"}, "timezone"),
        ({"recurrence": "FREQ=MINUTELY"}, "recurrence"),
        ({"match": ['instance=~"["']}, "match.0"),
        ({"end": "not a date"}, "end"),
        ({"hosts": "db-1"}, "hosts"),
        ({"surprise": 1}, "surprise"),
        ({"reason": ""}, "reason"),
    ],
)
async def test_a_bad_window_is_a_422_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**WINDOW, **change}.items() if v is not None}
    answer = await client.post(URL, json=body, headers=OPERATOR)
    assert answer.status_code == 422, answer.text
    assert field in [f["field"] for f in answer.json()["fields"]], answer.json()


async def test_a_bad_window_name_in_the_path_is_a_422(client: httpx.AsyncClient) -> None:
    answer = await client.delete(f"{URL}/Bad%20Name", headers=OPERATOR)
    assert answer.status_code == 422
