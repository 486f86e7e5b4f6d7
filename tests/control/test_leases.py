"""Ending a decision: its names freed, the cooldown its policy chooses, its outcome fed back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from responder.control import leases
from responder.control.guard import Guard
from responder.control.runs import active_runs, runs_of
from responder.decision.rules import GuardSpec
from responder.events.cloudevents import Outcome
from responder.storage.inbox import InboxSource
from responder.storage.store import Store
from tests.control.test_guard import admit, decision

RUN = "00000000-0000-0000-0000-0000000000b1"


async def test_a_run_that_failed_cools_its_key_down_by_cooldown_failed(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    d = replace(decision(), policy=GuardSpec(key="k", cooldown=60, cooldown_failed=600))
    admitted = await admit(store, guard, d)
    assert await leases.finish(store, admitted.decision_id, "FAILED", now=1000.0)
    async with store.transaction() as conn:
        assert await store.leases.cooldown_until(conn, d.key, 1000.0) == 1600.0


async def test_the_outcome_reaches_the_inbox_as_the_engine_reads_it(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    admitted = await admit(store, guard, decision())
    assert await leases.finish(store, admitted.decision_id, "CRASHED")
    [message] = await store.inbox.pending(10)
    assert message.source is InboxSource.OUTCOME
    outcome = Outcome.from_body(message.body)
    assert (outcome.decision_id, outcome.state, outcome.key) == (
        admitted.decision_id,
        "CRASHED",
        "restart/host-1",
    )
    assert outcome.labels["instance"] == "host-1"


async def test_a_flow_run_names_the_decisions_it_serves(store: Store) -> None:
    """A batched run serves several decisions; its final state ends them all."""
    guard = Guard(store, lease_seconds=60)
    first = await admit(store, guard, decision(key="a", fp="aa"))
    second = await admit(store, guard, decision(key="b", fp="bb"))
    other = await admit(store, guard, decision(key="c", fp="cc"))
    for admitted in (first, second):
        await store.decisions.set_flow_run(admitted.decision_id, RUN)
    served = await runs_of(store, RUN)
    assert [r.decision_id for r in served] == [first.decision_id, second.decision_id]
    assert await runs_of(store, "00000000-0000-0000-0000-0000000000b2") == []
    for run in served:
        assert await leases.finish(store, run.decision_id, "COMPLETED")
    assert await runs_of(store, RUN) == []  # ended runs hold nothing
    assert [r.decision_id for r in await active_runs(store)] == [other.decision_id]


async def test_expiry_ends_a_lost_run_and_renews_one_still_going(store: Store) -> None:
    guard = Guard(store, lease_seconds=0.01)
    going = await admit(store, guard, decision(key="going", fp="aa"))
    lost = await admit(store, guard, decision(key="lost", fp="bb"))
    creating = await admit(store, guard, decision(key="creating", fp="cc"))
    await store.decisions.set_flow_run(going.decision_id, RUN)
    await store.decisions.set_flow_run(lost.decision_id, "00000000-0000-0000-0000-0000000000b3")
    states = {RUN: "RUNNING", "00000000-0000-0000-0000-0000000000b3": leases.NO_SUCH_RUN}

    async def run_state(flow_run_id: str) -> str | None:
        return states[flow_run_id]

    await asyncio.sleep(0.05)
    await leases.expire_lost(store, {creating.decision_id}, run_state, 60)
    active = {r.decision_id for r in await active_runs(store)}
    assert active == {going.decision_id, creating.decision_id}
    [row] = [d for d in await store.decisions.recent() if d["id"] == lost.decision_id]
    assert row["flow_run_state"] == "EXPIRED"
    assert "Prefect has no flow run" in row["detail"]
    assert await store.leases.expired(time.time()) == []  # the others were renewed
