"""The escalation ladder's next attempts are durable timers (`storage.timers`).

After a run completes while its alert fires (and the rule allows another attempt), or after
a run is cancelled or crashes, the rule decides again once the cooldown is over. The timer is
a row in the store, so a restart or a reload between the run's end and the next attempt
loses nothing, on SQLite and PostgreSQL; and each test ends with exactly one admission per
attempt.
"""

from __future__ import annotations

from pathlib import Path

from responder.control.runs import active_runs
from responder.decision.services import ServiceCatalog
from responder.storage.store import Store
from tests.runtime.test_convergence import CLEAN, RESTART, Responder, responder

LADDER = """
  - name: restart
    match: ['alertname="Down"']
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard:
      key: "restart/{{ alert.labels.instance }}"
      cooldown: 10m
      cooldown_failed: 2m
      max_attempts: 3
"""


async def first_run(r: Responder) -> int:
    await r.send(r.alert("Down", "h1"))
    [run] = await r.admitted("Down")
    return int(run["id"])


async def test_the_next_attempt_survives_a_restart_between_the_run_and_the_retry(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    first = await first_run(r)
    await r.finish("restart")  # completed, and the alert still fires
    assert await store.timers.count() == 1

    await r.new_leader()  # the leader stops before the retry; a new one starts
    r.clock.now += 599
    await r.settle()
    assert len(await r.admitted("Down")) == 1  # the cooldown is not over
    r.clock.now += 3
    await r.settle()

    [_, second] = await r.admitted("Down")
    assert second["reason"].startswith(
        f"re-examined: the alert still fires after decision {first} completed; "
    )
    assert second["incident"] == (await r.admitted("Down"))[0]["incident"]
    assert await store.timers.count() == 0
    await r.settle()
    assert len(await r.admitted("Down")) == 2


async def test_the_next_attempt_survives_a_reload_and_is_made_once(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    await first_run(r)
    await r.finish("restart")
    await r.loop.use(r.rules(LADDER), ServiceCatalog())  # the reload judges it again ...
    await r.settle()
    assert len(await r.admitted("Down")) == 1  # ... but a rule that ran is the ladder's

    r.clock.now += 602
    for _ in range(3):
        await r.settle()
    assert len(await r.admitted("Down")) == 2


async def test_a_cancelled_run_is_decided_again_after_the_failure_cooldown(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    first = await first_run(r)
    await r.finish("restart", "CANCELLED")
    r.clock.now += 119
    await r.settle()
    assert len(await r.admitted("Down")) == 1
    r.clock.now += 3
    await r.settle()
    [_, second] = await r.admitted("Down")
    assert second["reason"].startswith(f"re-examined: decision {first}'s run ended CANCELLED; ")


async def test_the_ladder_ends_at_max_attempts_after_cancellations_too(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    await first_run(r)
    for state in ("CRASHED", "CANCELLED", "CANCELLED"):
        await r.finish("restart", state)
        r.clock.now += 200
        await r.settle()
    verdicts = [(d["verdict"], d["refusal"]) for d in await r.decisions("Down")]
    assert verdicts == [("admitted", None)] * 3 + [("refused", "max_attempts")]
    assert (await store.incidents.counts())["exhausted"] == 1
    assert await store.timers.count() == 0


async def test_an_alert_that_resolves_before_the_next_attempt_is_left_alone(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    await first_run(r)
    await r.finish("restart")
    await r.send(r.alert("Down", "h1", "resolved"))
    r.clock.now += 3600
    await r.settle()
    assert len(await r.admitted("Down")) == 1
    assert await store.timers.count() == 0  # taken, with nothing to do


async def test_a_failed_run_is_left_to_the_rules_on_its_outcome(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    await first_run(r)
    await r.finish("restart", "FAILED")
    r.clock.now += 3600
    await r.settle()
    assert len(await r.admitted("Down")) == 1
    assert await store.timers.count() == 0


async def test_a_run_whose_approval_was_rejected_is_not_tried_again(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, LADDER)
    first = await first_run(r)
    await store.decisions.set_flow_run(first, "flow-run-1")
    assert await store.approvals.set("flow-run-1", "rejected", (None,))
    await r.finish("restart", "CANCELLED")  # how a rejection ends a run
    r.clock.now += 3600
    await r.settle()
    assert len(await r.admitted("Down")) == 1
    assert await store.timers.count() == 0


async def test_a_removed_rule_stops_waiting_after_the_reload(store: Store, tmp_path: Path) -> None:
    r = await responder(store, tmp_path, RESTART + CLEAN)
    await r.send(r.alert("Down", "h1"))
    await r.send(r.alert("DiskFull", "h1"))  # waits for the host's mutex
    assert (await store.incidents.counts())["waiting"] == 1

    r.book = r.rules(RESTART)  # clean-disk is removed
    await r.loop.use(r.book, ServiceCatalog())
    await r.settle()
    counts = await store.incidents.counts()
    assert (counts["waiting"], counts["running"]) == (0, 1)

    await r.finish("restart")
    await r.settle()
    assert await r.admitted("DiskFull") == []
    assert [r.rule for r in await active_runs(store)] == []
