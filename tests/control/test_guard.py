"""The guard's admission on real SQLite and PostgreSQL, including concurrent callers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event

from responder.control import leases, pause
from responder.control.guard import Admission, Guard
from responder.control.ledger import Ledger
from responder.control.runs import active_runs
from responder.decision.decisions import Decision, Verdict
from responder.decision.rules import GuardSpec
from responder.events.webhook import Alert
from responder.storage.store import Store


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
    rows = await store.decisions.recent()
    assert {r["verdict"] for r in rows} == {"admitted", "refused"}


async def test_final_state_releases_the_key(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    first = await admit(store, guard, decision())
    await store.decisions.set_flow_run(first.decision_id, "00000000-0000-0000-0000-000000000001")
    [active] = await active_runs(store)
    assert active.flow_run_id == "00000000-0000-0000-0000-000000000001"
    assert await leases.finish(store, first.decision_id, "COMPLETED")
    assert not await leases.finish(store, first.decision_id, "COMPLETED")  # once only
    assert await active_runs(store) == []
    assert (await admit(store, guard, decision(fp="bb"))).admitted


async def test_expired_lease_is_taken_over(store: Store) -> None:
    short = Guard(store, lease_seconds=0.01)
    assert (await admit(store, short, decision())).admitted
    await asyncio.sleep(0.05)
    assert (await admit(store, short, decision(fp="bb"))).admitted
    assert await store.leases.count() == 1


async def test_200_concurrent_admissions_admit_exactly_one(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    results = await asyncio.gather(
        *(admit(store, guard, decision(fp=f"{i:x}")) for i in range(200))
    )
    assert sum(r.admitted for r in results) == 1
    assert await store.leases.count() == 1


async def test_long_hostile_keys_are_stored_whole(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    key = "restart/" + "ü$(x)" * 2000
    assert (await admit(store, guard, decision(key=key))).admitted
    assert not (await admit(store, guard, decision(key=key, fp="bb"))).admitted
    [row, _] = await store.decisions.recent()
    assert row["guard_key"] == key


async def test_mutex_names_are_taken_together_or_not_at_all(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    first = replace(decision(key="clean-disk/host-1"), mutex=("host:host-1",))
    assert (await admit(store, guard, first)).admitted
    # A different flow on the same host: its key is free, the host mutex is not.
    both = replace(decision(key="restart/host-1", fp="bb"), mutex=("host:host-1", "svc:checkout"))
    refused = await admit(store, guard, both)
    assert refused.refusal == "mutex_held"
    assert "mutex 'host:host-1' is held" in refused.reason
    # Nothing of the refused decision stays held: svc:checkout is still free.
    other = replace(decision(key="x", fp="cc"), mutex=("svc:checkout",))
    assert (await admit(store, guard, other)).admitted
    assert await store.leases.count() == 4  # two keys, two mutexes


async def test_concurrent_mutex_sharing_decisions_never_both_admitted(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    results = await asyncio.gather(
        *(
            admit(store, guard, replace(decision(key=f"k{i}", fp=f"{i:x}"), mutex=("host:h",)))
            for i in range(50)
        )
    )
    assert sum(r.admitted for r in results) == 1
    assert {r.refusal for r in results if not r.admitted} == {"mutex_held"}


async def test_cooldown_after_success_and_after_failure(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    spec = GuardSpec(key="-", cooldown="1h", cooldown_failed=0)
    first = await admit(store, guard, replace(decision(), policy=spec))
    assert await leases.finish(store, first.decision_id, "COMPLETED")
    cooling = await admit(store, guard, replace(decision(fp="bb"), policy=spec))
    assert cooling.refusal == "cooldown"
    assert "cools down until" in cooling.reason
    # A failed run with cooldown_failed=0 leaves its key free at once.
    other = replace(decision(key="restart/host-2", fp="cc"), policy=spec)
    failed = await admit(store, guard, other)
    assert await leases.finish(store, failed.decision_id, "FAILED")
    assert (await admit(store, guard, replace(other, alert=decision(fp="dd").alert))).admitted


async def test_budget_never_admits_n_plus_one_even_concurrently(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    spec = GuardSpec(key="-", budget={"max_starts": 3, "per": "1h"})
    results = await asyncio.gather(
        *(
            admit(store, guard, replace(decision(key=f"k{i}", fp=f"{i:x}"), policy=spec))
            for i in range(30)
        )
    )
    assert sum(r.admitted for r in results) == 3
    assert {r.refusal for r in results if not r.admitted} == {"budget"}
    # Another flow has its own budget; a global budget counts every flow.
    other_flow = replace(decision(key="z", fp="ff"), flow="clean-disk", policy=spec)
    assert (await admit(store, guard, other_flow)).admitted
    global_spec = GuardSpec(key="-", budget={"max_starts": 4, "per": 3600, "scope": "global"})
    last = replace(decision(key="y", fp="ee"), flow="third", policy=global_spec)
    assert (await admit(store, guard, last)).refusal == "budget"


async def test_max_active_caps_the_blast_radius(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    spec = GuardSpec(key="-", max_active=2)
    results = [
        await admit(store, guard, replace(decision(key=f"k{i}", fp=f"{i:x}"), policy=spec))
        for i in range(3)
    ]
    assert [r.admitted for r in results] == [True, True, False]
    assert results[2].refusal == "max_active"
    assert await leases.finish(store, results[0].decision_id, "COMPLETED")
    assert (await admit(store, guard, replace(decision(key="k9", fp="9"), policy=spec))).admitted


def on_service(d: Decision, service: str, flow: str) -> Decision:
    alert = d.alert.model_copy(update={"labels": {**d.alert.labels, "service": service}})
    return replace(d, alert=alert, flow=flow)


async def test_a_percentage_of_a_services_hosts_caps_active_runs_on_that_service(
    store: Store,
) -> None:
    from responder.decision.decisions import blast_radius

    guard = Guard(store, lease_seconds=60)
    spec = GuardSpec(key="-", max_active="25%", max_active_per="service")
    cap, basis = blast_radius(spec, {"name": "search", "hosts": 12})
    assert (cap, basis) == (3, "25% of 12 hosts of service search")

    def search(i: int, flow: str) -> Decision:
        d = replace(decision(key=f"s{i}", fp=f"{i:x}"), policy=spec, max_active=cap)
        return on_service(replace(d, max_active_basis=basis), "search", flow)

    # Any flow counts against the service, even 20 decisions at once: exactly 3 run.
    flows = ["restart-service", "clean-disk"] * 10
    results = await asyncio.gather(
        *(admit(store, guard, search(i, flow)) for i, flow in enumerate(flows))
    )
    assert sum(r.admitted for r in results) == 3
    refused = [r for r in results if not r.admitted]
    assert {r.refusal for r in refused} == {"max_active"}
    assert "3 runs on service search active (max_active 3 = 25% of 12" in refused[0].reason
    # Another service is not affected.
    other = on_service(replace(decision(key="o1", fp="f1"), policy=spec, max_active=1), "x", "f")
    assert (await admit(store, guard, other)).admitted


async def test_a_percentage_without_the_services_host_count_refuses(store: Store) -> None:
    from responder.decision.decisions import blast_radius

    spec = GuardSpec(key="-", max_active="50%", max_active_per="service")
    cap, basis = blast_radius(spec, {"name": "payments"})
    d = on_service(
        replace(decision(), policy=spec, max_active=cap, max_active_basis=basis), "payments", "f"
    )
    result = await admit(store, Guard(store, lease_seconds=60), d)
    assert result.refusal == "max_active"
    assert "whose hosts the catalog does not give" in result.reason


async def test_max_attempts_per_incident(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    spec = GuardSpec(key="-", max_attempts=2)
    for expected in (True, True, False):
        result = await admit(store, guard, replace(decision(), policy=spec))
        assert result.admitted is expected
        if result.admitted:
            assert await leases.finish(store, result.decision_id, "FAILED")
    assert result.refusal == "max_attempts"


async def test_pause_refuses_everything_until_resumed(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    await pause.pause(store, "change freeze", "oncall")
    paused = await admit(store, guard, decision())
    assert paused.refusal == "paused"
    assert "change freeze" in paused.reason
    await pause.resume(store)
    assert (await admit(store, guard, decision(fp="bb"))).admitted


async def test_shadow_and_dry_run_record_without_taking_anything(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    shadow = await admit(store, guard, replace(decision(), shadow=True))
    assert shadow.verdict == Verdict.SHADOW
    assert shadow.reason == "would admit"
    assert await store.leases.count() == 0
    real = await admit(store, guard, decision(fp="bb"))
    assert real.admitted
    dry = await admit(store, Guard(store, 60, dry_run=True), decision(fp="cc"))
    assert dry.verdict == Verdict.DRY_RUN
    assert dry.refusal == "key_active"
    assert dry.reason.startswith("would refuse: key 'restart/host-1' is active")


async def test_decisions_whose_leases_expired_are_found_once(store: Store) -> None:
    guard = Guard(store, lease_seconds=0.01)
    lost = await admit(store, guard, replace(decision(), mutex=("host:h",)))
    live = await admit(store, Guard(store, 60), decision(key="other", fp="bb"))
    await asyncio.sleep(0.05)
    assert await store.leases.expired(time.time()) == [(lost.decision_id, None)]
    assert await leases.finish(store, lost.decision_id, "EXPIRED", detail="lost")
    assert await store.leases.expired(time.time()) == []
    assert live.admitted
    [row] = [d for d in await store.decisions.recent() if d["id"] == lost.decision_id]
    assert (row["flow_run_state"], row["detail"]) == ("EXPIRED", "lost")


async def test_dispatch_waits_while_paused_and_skips_ended_decisions(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    admitted = await admit(store, guard, decision())
    assert await pause.wanted(store, admitted.decision_id) is pause.Wanted.YES
    await pause.pause(store, "incident review", "oncall")
    assert await pause.wanted(store, admitted.decision_id) is pause.Wanted.PAUSED
    await pause.resume(store)
    await leases.finish(store, admitted.decision_id, "EXPIRED")
    assert await pause.wanted(store, admitted.decision_id) is pause.Wanted.NO


async def test_an_expired_lease_with_a_flow_run_is_not_taken_over(store: Store) -> None:
    """Only the dispatcher, which asks Prefect, may end a decision whose run exists."""
    short = Guard(store, lease_seconds=0.01)
    running = await admit(store, short, decision())
    await store.decisions.set_flow_run(running.decision_id, "00000000-0000-0000-0000-0000000000aa")
    await asyncio.sleep(0.05)
    refused = await admit(store, short, decision(fp="bb"))
    assert refused.refusal == "key_active"
    assert "not confirmed ended" in refused.reason
    # Renewed because Prefect says the run goes on, the lease holds the key again.
    await leases.renew(store, [running.decision_id], 60)
    assert await store.leases.expired(time.time()) == []


async def test_a_lost_looking_decision_whose_run_was_just_created_is_not_ended(
    store: Store,
) -> None:
    """The poll read the lease without a run, then the run was created: ending the decision
    then would free the key of a running remediation."""
    guard = Guard(store, lease_seconds=60)
    first = await admit(store, guard, decision())
    await store.decisions.set_flow_run(first.decision_id, "00000000-0000-0000-0000-00000000000a")
    assert not await leases.finish(store, first.decision_id, "EXPIRED", runless=True)
    assert await store.leases.count() == 1  # the key (no mutex in this decision)
    [active] = await active_runs(store)
    assert active.decision_id == first.decision_id
    # Without a run, the same call ends it and frees its names.
    second = await admit(store, guard, decision(key="restart/host-2", fp="cc"))
    assert await leases.finish(store, second.decision_id, "EXPIRED", runless=True)
    assert [r.decision_id for r in await active_runs(store)] == [first.decision_id]


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs: through SQLAlchemy, and those sent
    through the driver (`Database.fetch`, `write_many`), each counted once."""
    seen: list[str] = []
    direct = {"now": False}  # a driver-level statement is under way (PostgreSQL: it is
    # executed through SQLAlchemy's connection too, and would count twice)

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not direct["now"]:
            seen.append(statement)

    def through_driver(method: Any) -> Any:
        async def counted(conn: Any, statement: str, *args: Any) -> Any:
            seen.append(statement)
            direct["now"] = True
            try:
                return await method(conn, statement, *args)
            finally:
                direct["now"] = False

        return counted

    fetch, write_many = store.fetch, store.write_many
    store.fetch, store.write_many = through_driver(fetch), through_driver(write_many)  # type: ignore[method-assign]
    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
        store.fetch, store.write_many = fetch, write_many  # type: ignore[method-assign]


async def test_refusals_in_one_transaction_cost_no_statement_each(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    first = await admit(store, guard, decision())
    async with store.transaction() as conn:
        ledger = Ledger(store, conn)
        admissions = guard.within(conn, ledger)
        with statements(store) as sent:
            answers = [await admissions.admit(decision(fp=f"{i:x}"), 1) for i in range(1, 101)]
        # The pause switch and the maintenance windows once; the first decision's own
        # names, then every held name once.
        assert len(sent) == 4, sent
        assert "FROM maintenance_windows" in sent[1], sent
        assert "FROM leases WHERE key_digest IN" in sent[2] and "WHERE" not in sent[3], sent
        await ledger.flush()
    assert {a.refusal for a in answers} == {"key_active"}
    assert f"held by decision {first.decision_id}" in answers[0].reason
    # Written in bulk, every refusal has its own id, in the order the decisions were made.
    ids = [a.decision_id for a in answers]
    assert ids == sorted(ids) and len(set(ids)) == 100 and ids[0] > first.decision_id
    rows = {r["id"]: r for r in await store.decisions.recent(limit=200)}
    assert [rows[i]["incident"].split("@")[0] for i in ids] == [f"{i:016x}" for i in range(1, 101)]
    assert all(rows[i]["verdict"] == "refused" for i in ids)


async def test_a_name_taken_in_a_transaction_is_held_for_the_rest_of_it(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    async with store.transaction() as conn:
        ledger = Ledger(store, conn)
        admissions = guard.within(conn, ledger)
        taken = await admissions.admit(replace(decision(), mutex=("host:host-1",)), 1)
        same_key = await admissions.admit(decision(fp="bb"), 1)
        same_host = await admissions.admit(
            replace(decision(key="clean-disk/host-1", fp="cc"), mutex=("host:host-1",)), 1
        )
        elsewhere = await admissions.admit(decision(key="restart/host-2", fp="dd"), 1)
        await ledger.flush()
    assert taken.admitted and elsewhere.admitted
    assert same_key.refusal == "key_active" and same_host.refusal == "mutex_held"
    assert f"held by decision {taken.decision_id}" in same_key.reason
    assert taken.decision_id < same_key.decision_id < same_host.decision_id
    assert same_host.decision_id < elsewhere.decision_id
    assert await store.leases.count() == 3


async def test_a_name_taken_elsewhere_after_the_first_read_is_still_refused(
    store: Store,
) -> None:
    guard = Guard(store, lease_seconds=60)
    assert (await admit(store, guard, decision(key="restart/host-0", fp="00"))).admitted
    async with store.transaction() as conn:
        ledger = Ledger(store, conn)
        admissions = guard.within(conn, ledger)
        # The first admission reads the held names: restart/host-0 only. (A refusal writes
        # nothing yet, so SQLite lets the other transaction below commit.)
        assert (await admissions.admit(decision(key="restart/host-0", fp="99"), 1)).refusal
        # Another transaction takes restart/host-1 meanwhile (another engine loop, say).
        other = await admit(store, guard, decision(fp="aa"))
        late = await admissions.admit(decision(fp="bb"), 1)
        again = await admissions.admit(decision(fp="cc"), 1)
        await ledger.flush()
    assert other.admitted
    assert late.refusal == "key_active" and again.refusal == "key_active"
    assert f"held by decision {other.decision_id}" in again.reason


async def test_a_shadow_decision_looks_again_before_it_would_admit(store: Store) -> None:
    guard = Guard(store, lease_seconds=60)
    assert (await admit(store, guard, decision(key="restart/host-0", fp="00"))).admitted
    async with store.transaction() as conn:
        ledger = Ledger(store, conn)
        admissions = guard.within(conn, ledger)
        for fp in ("01", "02"):  # reads the held names: restart/host-1 is free
            assert (await admissions.admit(decision(key="restart/host-0", fp=fp), 1)).refusal
        other = await admit(store, guard, decision(fp="aa"))  # another transaction takes it
        shadow = await admissions.admit(replace(decision(fp="bb"), shadow=True), 1)
        await ledger.flush()
    assert other.admitted
    assert shadow.verdict is Verdict.SHADOW
    assert shadow.reason.startswith("would refuse: key 'restart/host-1' is active"), shadow.reason
