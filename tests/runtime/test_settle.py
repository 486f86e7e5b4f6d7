"""`settle`: a rule that holds waits a short, bounded time before acting, so that correlated
alerts and facts can land first; the wait is a durable timer, recorded as waiting (SQLite and
PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.decision.rules import load_rule_text
from responder.exceptions import RuleError
from responder.storage.store import Store
from tests.runtime.test_convergence import responder

# The restart waits 30 s: a NodeDown arriving meanwhile means the host is gone, not the service.
CORRELATED = """
  - name: node-down
    match: ['alertname="NodeDown"']
    assert: {fact: node-down, with: {instance: "{{ alert.labels.instance }}"}, ttl: 1h}
  - name: restart
    match: ['alertname="Down"']
    unless: [{fact: node-down, where: ['instance="{{ alert.labels.instance }}"']}]
    settle: 30s
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}"}
"""


async def test_a_correlated_alert_that_lands_while_the_rule_settles_stops_it(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, CORRELATED)
    await r.send(r.alert("Down", "h1"))  # the service's alert comes first ...
    [deferred] = await r.decisions("Down")
    assert (deferred["verdict"], deferred["rule"]) == ("deferred", "restart")
    [waiting] = await store.incidents.waiting()
    assert (waiting["waiting_on"], waiting["until"]) == ("settle", r.clock.now + 30)

    r.clock.now += 10
    await r.send(r.alert("NodeDown", "h1"))  # ... the host's a moment later
    r.clock.now += 21
    await r.settle()

    [_, after] = await r.decisions("Down")
    assert (after["verdict"], after["rule"]) == ("unmatched", "restart")
    assert after["reason"].startswith("settled; then it no longer held: unless")
    assert (await store.incidents.counts())["waiting"] == 0
    assert await store.timers.count() == 0


async def test_a_rule_that_still_holds_after_settling_acts_once(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, CORRELATED)
    await r.send(r.alert("Down", "h1"))
    r.clock.now += 29
    await r.settle()
    assert await r.admitted("Down") == []
    await r.new_leader()  # the wait is a row: a new leader keeps it
    r.clock.now += 2
    await r.settle()
    [run] = await r.admitted("Down")
    assert run["reason"].startswith("re-examined: settled 30s; ")
    r.clock.now += 3600
    await r.settle()
    assert len(await r.admitted("Down")) == 1


async def test_an_alert_that_resolves_while_its_rule_settles_is_left_alone(
    store: Store, tmp_path: Path
) -> None:
    r = await responder(store, tmp_path, CORRELATED)
    await r.send(r.alert("Down", "h1"))
    r.clock.now += 5
    await r.send(r.alert("Down", "h1", "resolved"))
    r.clock.now += 60
    await r.settle()
    assert await r.admitted("Down") == []
    assert await store.timers.count() == 0


@pytest.mark.parametrize(
    ("settle", "status", "error"),
    [
        ("11m", "firing", "less than or equal to 600"),
        ("0s", "firing", "greater than 0"),
        ("30s", "resolved", "a rule on resolved alerts accepts match"),
    ],
)
def test_settle_is_short_and_for_firing_alerts(settle: str, status: str, error: str) -> None:
    text = f"""rules:
  - name: r
    status: {status}
    match: ['alertname="Down"']
    settle: {settle}
    run: {{flow: http-call, parameters: {{url: "http://127.0.0.1:9/"}}}}
    guard: {{key: "k"}}
"""
    with pytest.raises(RuleError, match=error):
        load_rule_text(text, "r.yaml")
