"""The guard's admission on real SQLite and PostgreSQL, including concurrent callers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from responder.decisions import Decision
from responder.guard import Admission, Guard
from responder.models import Alert
from responder.store import Store


def decision(key: str = "restart/host-1", fp: str = "aa") -> Decision:
    alert = Alert(
        status="firing",
        labels={"alertname": "ServiceDown", "instance": "host-1"},
        startsAt=datetime(2026, 11, 25, tzinfo=UTC),
        fingerprint=fp,
    )
    return Decision("r", "restart-service", {"host": "host-1"}, key, alert)


async def admit(store: Store, guard: Guard, d: Decision) -> Admission:
    async with store.transaction() as conn:
        return await guard.admit(conn, d, inbox_id=1)


async def test_one_active_remediation_per_key(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    first = await admit(store, guard, decision())
    second = await admit(store, guard, decision(fp="bb"))
    other_key = await admit(store, guard, decision(key="restart/host-2"))
    assert first.admitted and other_key.admitted
    assert not second.admitted
    assert f"held by decision {first.decision_id}" in second.reason
    rows = await store.decisions()
    assert {r["verdict"] for r in rows} == {"admitted", "refused"}


async def test_final_state_releases_the_key(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    first = await admit(store, guard, decision())
    await store.set_flow_run(first.decision_id, "00000000-0000-0000-0000-000000000001")
    [active] = await store.active_runs()
    assert active.flow_run_id == "00000000-0000-0000-0000-000000000001"
    assert await store.finish(first.decision_id, "COMPLETED")
    assert not await store.finish(first.decision_id, "COMPLETED")  # once only
    assert await store.active_runs() == []
    assert (await admit(store, guard, decision(fp="bb"))).admitted


async def test_expired_lease_is_taken_over(store: Store) -> None:
    short = Guard(store, lease_seconds=0.01)
    assert (await admit(store, short, decision())).admitted
    await asyncio.sleep(0.05)
    assert (await admit(store, short, decision(fp="bb"))).admitted
    assert await store.lease_count() == 1


async def test_concurrent_admissions_admit_exactly_one(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    results = await asyncio.gather(*(admit(store, guard, decision(fp=f"{i:x}")) for i in range(20)))
    assert sum(r.admitted for r in results) == 1
    assert await store.lease_count() == 1


async def test_long_hostile_keys_are_stored_whole(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    key = "restart/" + "ü$(x)" * 2000
    assert (await admit(store, guard, decision(key=key))).admitted
    assert not (await admit(store, guard, decision(key=key, fp="bb"))).admitted
    [row, _] = await store.decisions()
    assert row["guard_key"] == key
