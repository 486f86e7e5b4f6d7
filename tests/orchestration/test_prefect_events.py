"""Prefect's event feed as a source, against a real Prefect server: a flow run outside
Responder fails, and its `prefect.flow-run.Failed` event reaches the inbox once and the engine
as an `event` fact; a run of Responder's own (tagged `responder`) does not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, tags
from sqlalchemy import select

from responder.events.facts import Fact
from responder.runtime.service import Service
from responder.storage.schema import inbox
from tests.helpers import make_settings, wait_for


@flow(name="nightly-backup", retries=0)
def nightly_backup(database: str) -> None:
    raise RuntimeError(f"backup of {database}: disk full")


def fail_a_run(responders: bool = False) -> str:
    """Run the flow in this process against the test server; its flow run id."""
    if responders:
        with tags("responder", "rule:some-rule"):
            state: Any = nightly_backup("orders", return_state=True)
    else:
        with tags("backups"):
            state = nightly_backup("orders", return_state=True)
    assert state.is_failed()
    return str(state.state_details.flow_run_id)


# Retry a failed backup run (dry run here: the decision is recorded, no flow runs).
RETRY = """
rules:
  - name: retry-failed-backup
    event: ['type="prefect.flow-run.Failed"', 'data.flow="nightly-backup"']
    run:
      flow: http-call
      parameters: {url: "http://127.0.0.1:9/retry/{{ event.data.flow_run_id }}"}
    guard: {key: "backup/{{ event.data.flow_run_id }}"}
"""


@pytest.fixture
async def service(prefect_api_url: str, tmp_path: Path, rules_dir: Path) -> AsyncIterator[Service]:
    (rules_dir / "backups.yaml").write_text(RETRY)
    settings = make_settings(
        tmp_path, rules_dir, prefect_event_types=["prefect.flow-run.Failed"], dry_run=True
    )
    service = Service(settings, prefect_api_url=prefect_api_url)
    await service.start()
    yield service
    await service.stop()


def failed_events(service: Service) -> list[Fact]:
    return [
        f
        for f in service.loop.engine.facts()
        if f.name == "event" and f.fields["type"] == "prefect.flow-run.Failed"
    ]


async def inbox_bodies(service: Service) -> list[dict[str, Any]]:
    async with service.store.transaction() as conn:
        rows = await conn.execute(select(inbox.c.body).where(inbox.c.source == "cloudevents"))
        return [json.loads(bytes(r.body)) for r in rows]


async def test_a_failed_run_outside_responder_becomes_one_event(service: Service) -> None:
    own = await asyncio.to_thread(fail_a_run, True)
    outside = await asyncio.to_thread(fail_a_run)

    async def arrived() -> list[Fact]:
        return [f for f in failed_events(service) if f.fields["flow_run_id"] == outside]

    (fact,) = await wait_for(arrived, timeout=60)
    assert fact.fields["subject"] == f"prefect.flow-run.{outside}"
    assert fact.fields["source"] == "prefect"
    assert fact.fields["flow"] == "nightly-backup"
    assert fact.fields["state"] == "Failed"
    assert "backups" in fact.fields["tags"].split(",")
    await asyncio.sleep(2)  # time enough for anything else the feed would send
    bodies = await inbox_bodies(service)
    assert [b["data"]["flow_run_id"] for b in bodies].count(outside) == 1
    assert all(b["data"]["flow_run_id"] != own for b in bodies)  # Responder's own run
    # Other tests' failed runs share this session's Prefect server: count this test's own.
    mine = [f for f in failed_events(service) if f.fields["flow_run_id"] in (own, outside)]
    assert len(mine) == 1
    ledger = await service.decisions(limit=100)
    ledger = [d for d in ledger if d["labels"].get("data.flow_run_id") in (own, outside)]
    assert [(d["rule"], d["verdict"]) for d in ledger] == [("retry-failed-backup", "dry_run")]


async def test_a_new_leader_reads_back_and_the_event_stays_one(
    service: Service, prefect_api_url: str
) -> None:
    outside = await asyncio.to_thread(fail_a_run)

    async def arrived() -> list[Fact]:
        return [f for f in failed_events(service) if f.fields["flow_run_id"] == outside]

    await wait_for(arrived, timeout=60)
    await service.stop()
    # Prefect's server stores events for backfill every 5 s (its event persister's
    # flush_interval): the next leader reads back what is stored.
    await asyncio.sleep(6)
    # The next leader subscribes from prefect_events_lookback_seconds ago: it reads the
    # event again, and the engine holds it once (its identity is Prefect's event id).
    successor = Service(service.settings, prefect_api_url=prefect_api_url)
    await successor.start()
    try:

        async def read_again() -> bool:
            bodies = await inbox_bodies(successor)
            return [b["data"]["flow_run_id"] for b in bodies].count(outside) == 2

        await wait_for(read_again, timeout=60)

        async def decided() -> bool:
            return await successor.backlog() == 0

        await wait_for(decided, timeout=20)
        held = [f for f in failed_events(successor) if f.fields["flow_run_id"] == outside]
        assert len(held) == 1
        ledger = list(reversed(await successor.decisions(limit=100)))
        # (The other test's failed run is read back too: another event, another decision.)
        ledger = [d for d in ledger if d["labels"].get("data.flow_run_id") == outside]
        assert [(d["rule"], d["verdict"]) for d in ledger] == [
            ("retry-failed-backup", "dry_run"),
            (None, "duplicate"),
        ]
    finally:
        await successor.stop()
        await service.start()  # the fixture stops it


def test_the_cloudevent_names_the_run_its_flow_deployment_and_pool() -> None:
    """What a deployment's failed run carries (Prefect's related resources by role)."""
    from prefect.events import Event

    from responder.orchestration.prefect_events import cloudevent

    def prefect_event(*tags: str) -> Event:
        return Event(
            event="prefect.flow-run.Failed",
            resource={
                "prefect.resource.id": "prefect.flow-run.5e1f",
                "prefect.resource.name": "brisk-otter",
                "prefect.state-name": "Failed",
            },
            related=[
                {
                    "prefect.resource.id": "prefect.flow.77",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": "backup",
                },
                {
                    "prefect.resource.id": "prefect.deployment.4c1d",
                    "prefect.resource.role": "deployment",
                    "prefect.resource.name": "backup-db",
                },
                {
                    "prefect.resource.id": "prefect.work-pool.9",
                    "prefect.resource.role": "work-pool",
                    "prefect.resource.name": "default",
                },
                *(
                    {"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"}
                    for t in tags
                ),
            ],
        )

    made = cloudevent(prefect_event("nightly", "db"))
    assert made is not None
    assert made["type"] == "prefect.flow-run.Failed"
    assert made["subject"] == "prefect.flow-run.5e1f"
    assert made["data"] == {
        "flow_run_id": "5e1f",
        "flow_run_name": "brisk-otter",
        "state": "Failed",
        "flow": "backup",
        "deployment": "backup-db",
        "deployment_id": "4c1d",
        "work_pool": "default",
        "tags": "nightly,db",
    }
    assert cloudevent(prefect_event("responder", "rule:x")) is None  # a run of Responder's
    assert cloudevent(prefect_event("responder-retry")) is not None  # a retry it asked for
