"""Pause and resume: every replica obeys the switch, and a pause is no dispatch failure."""

from __future__ import annotations

import time
from dataclasses import replace

from prometheus_client import REGISTRY

from responder.control import pause
from responder.control.guard import Guard
from responder.control.runs import active_runs
from responder.decision.rules import RunBatch
from responder.orchestration.dispatch import Dispatcher
from responder.storage.store import Store
from tests.control.test_guard import admit, decision


def dispatch_failures() -> float:
    return REGISTRY.get_sample_value("responder_dispatch_failures_total") or 0.0


async def test_pausing_while_a_batch_waits_is_not_a_dispatch_failure(store: Store) -> None:
    """A batch whose window closes while remediation is paused waits for the resume: it is
    not a failed flow-run creation, and says nothing about whether Prefect is reachable."""
    guard = Guard(store, lease_seconds=60)
    batched = replace(
        decision(), parameters={"hosts": ["host-1"]}, batch=RunBatch(window=0.01, over="hosts")
    )
    assert (await admit(store, guard, batched)).admitted
    [run] = await active_runs(store)
    await pause.pause(store, "maintenance", "ops")
    # Nothing listens there: Prefect must not be asked while paused.
    dispatcher = Dispatcher(store, "http://127.0.0.1:9/api", retry_seconds=60)
    dispatcher.prefect_reachable = True
    failures = dispatch_failures()
    try:
        await dispatcher._dispatch_batch([(run, time.monotonic())], attempt=0)
        assert dispatch_failures() == failures
        assert dispatcher.prefect_reachable
        assert dispatcher._retries, "the paused batch is tried again later"
    finally:
        await dispatcher.stop()


async def test_pause_and_resume_are_seen_by_the_guard_and_the_dispatcher(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    admitted = await admit(store, guard, decision())
    async with store.transaction() as conn:
        assert await pause.paused(store, conn) is None
    paused = await pause.pause(store, "change freeze", "operator-1", declared_by="mallory")
    assert paused.to_json() == {
        "reason": "change freeze",
        "by": "operator-1",
        "at": paused.at,
        "declared_by": "mallory",
    }
    async with store.transaction() as conn:
        assert await pause.paused(store, conn) == paused
    assert await pause.wanted(store, admitted.decision_id) is pause.Wanted.PAUSED
    refused = await admit(store, guard, decision(key="other", fp="bb"))
    assert refused.refusal == "paused"
    await pause.resume(store)
    assert await pause.wanted(store, admitted.decision_id) is pause.Wanted.YES


async def test_a_pause_declared_by_the_operator_it_names_records_no_declared_by(
    store: Store,
) -> None:
    for declared in ("", "operator-1"):
        paused = await pause.pause(store, "r", "operator-1", declared_by=declared)
        assert "declared_by" not in paused.to_json()
