"""Leases: the names an admitted decision holds until its run ends, and what ending frees.

Taking names (`acquire`), ending a decision (`finish`: its final state, its names freed, its
key's cooldown started and its outcome fed back to the engine, in one transaction), renewing
the leases of runs still going, and ending those whose lease expired once their run is known
not to be going (`expire_lost`). The dispatcher tells what Prefect says; this decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from responder import metrics
from responder.control import pause
from responder.control.runs import ActiveRun
from responder.events.cloudevents import Outcome
from responder.storage.decisions import Ending
from responder.storage.inbox import InboxSource
from responder.storage.leases import LeaseHolder
from responder.storage.schema import key_digest
from responder.storage.store import Store

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
LEASE_EXPIRED = "lease expired before a final state was seen; the key is free again"
# What Prefect says of a flow run whose lease expired: its state type, None while it has
# none, or NO_SUCH_RUN.
NO_SUCH_RUN = "no such run"
RunState = Callable[[str], Awaitable[str | None]]


async def acquire(
    store: Store, conn: AsyncConnection, names: list[str], decision_id: int, ttl: float, now: float
) -> LeaseHolder | None:
    """Take every name or none; return a live holder of one of them when refused.

    A holder whose lease expired gives way, once: its decision ends as EXPIRED (outcome and
    cooldown included), as the dispatcher's poll would end it. Not if its flow run exists:
    only the dispatcher, which can ask Prefect whether that run ended, may end such a decision.
    """
    wanted = set(names)
    for _ in range(2):
        taken = await store.leases.take(conn, names, decision_id, ttl, now)
        if len(taken) == len(wanted):
            return None
        await store.leases.drop(conn, taken)
        expired = await store.leases.expired_runless(conn, names, now)
        if not expired:
            break
        for expired_id in expired:
            # A holder already final (a lost release) still frees its names; one whose
            # run was created meanwhile keeps them.
            await finish_in(store, conn, expired_id, "EXPIRED", LEASE_EXPIRED, now, runless=True)
    holder = await store.leases.holder(conn, names)
    # Not all names were taken, even if their holder let go meanwhile: refuse.
    return holder or LeaseHolder(min(wanted, key=key_digest), 0, None, now)


async def finish(
    store: Store,
    decision_id: int,
    state: str,
    detail: str | None = None,
    now: float | None = None,
    *,
    runless: bool = False,
) -> bool:
    """Record a final state, free the decision's names and start its key's cooldown.

    The outcome is also committed to the inbox, in the same transaction, so the engine
    loop hears it in order and rules can react to it (the closed loop). False if the
    decision was already final: the first final state wins. With `runless`, only a
    decision that has no flow run is ended: one whose run was created meanwhile is not.
    """
    async with store.transaction() as conn:
        when = time.time() if now is None else now
        return await finish_in(store, conn, decision_id, state, detail, when, runless=runless)


async def finish_in(
    store: Store,
    conn: AsyncConnection,
    decision_id: int,
    state: str,
    detail: str | None,
    now: float,
    *,
    runless: bool = False,
) -> bool:
    """`finish` in the caller's transaction."""
    ending = await store.decisions.end(conn, decision_id, state, detail, now, runless=runless)
    if ending is Ending.HAS_RUN:
        return False  # its run exists after all: only Prefect's state may end it
    await store.leases.release(conn, decision_id)
    if ending is Ending.ALREADY_FINAL:
        return False
    row = await store.decisions.ended(conn, decision_id)
    run = ActiveRun.of_row(row)
    outcome = Outcome(
        decision_id=decision_id,
        state=state,
        rule=run.rule,
        flow=run.flow,
        key=run.guard_key,
        incident=run.incident,
        labels=run.labels,
        approval=row.approval_state,
    )
    await store.inbox.add_in(conn, InboxSource.OUTCOME, outcome.body(), now)
    # Its incident is done; incidents waiting for its names see them free (level-triggered).
    await store.incidents.finished(conn, decision_id, state, now)
    seconds = run.policy.cooldown_after(state)
    if seconds and run.guard_key is not None:
        await store.leases.cool(conn, run.guard_key, now + seconds, decision_id)
    return True


async def renew(store: Store, decision_ids: list[int], lease_seconds: float) -> None:
    """Runs still going keep their names another `lease_seconds`."""
    await store.leases.renew(decision_ids, time.time() + lease_seconds)


async def expire_lost(
    store: Store, pending: set[int], run_state: RunState, lease_seconds: float
) -> None:
    """End decisions whose lease expired, once their run is known not to be going.

    `pending`: decisions whose run is still being created (not lost). `run_state` asks
    Prefect for a run's state type (NO_SUCH_RUN when it has no such run); it raises when
    Prefect cannot answer, and then nothing more is ended. A run still going gets its lease
    renewed: expiring it would let a second run of the same key start.
    """
    keep: list[int] = []
    for decision_id, flow_run_id in await store.leases.expired(time.time()):
        if flow_run_id is None and decision_id in pending:
            keep.append(decision_id)  # its run is being created: not lost
            continue
        state, detail = "EXPIRED", LEASE_EXPIRED
        if flow_run_id is not None:
            found = await run_state(flow_run_id)
            if found == NO_SUCH_RUN:
                detail = f"{LEASE_EXPIRED}; Prefect has no flow run {flow_run_id}"
            elif found not in FINAL_STATES:
                keep.append(decision_id)
                continue
            else:
                state, detail = str(found), "final state found after the lease expired"
        if await finish(store, decision_id, state, detail=detail, runless=flow_run_id is None):
            metrics.FLOW_RUNS_FINISHED.labels(state=state).inc()
            log.warning("decision %s: %s (%s)", decision_id, state, detail)
    await renew(store, keep, lease_seconds)


async def guard_state(store: Store) -> dict[str, object]:
    """Held names, live cooldowns and the pause switch, for operators."""
    now = time.time()
    async with store.transaction() as conn:
        paused = await pause.paused(store, conn)
        return {
            "leases": await store.leases.live(conn, now),
            "cooldowns": await store.leases.cooling(conn, now),
            "pause": None if paused is None else paused.to_json(),
        }
