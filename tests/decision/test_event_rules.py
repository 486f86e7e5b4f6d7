"""Rules on events, through the real engine loop on a real store (SQLite and PostgreSQL):
an event starts a decision, the guard admits it once, a resent event is a duplicate, and
`count`, `after` and fact joins work on events.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from responder.decision.services import ServiceCatalog
from responder.storage.inbox import InboxSource
from responder.storage.store import Store
from tests.runtime.test_convergence import Responder

SMOKE = """
  - name: smoke-check
    event: ['type="deploy.finished"', 'data.env="prod"']
    run:
      flow: http-call
      parameters: {url: "http://127.0.0.1:9/smoke/{{ event.subject }}"}
    guard: {key: "smoke/{{ event.subject }}", cooldown: 10m}
"""


class Events(Responder):
    """The convergence harness, with events sent as a sender would (to the inbox)."""

    async def event(self, *events: dict[str, Any], settle: bool = True) -> None:
        body = [{"specversion": "1.0", "source": "ci", **e} for e in events]
        await self.store.inbox.add(InboxSource.CLOUDEVENTS, json.dumps(body).encode())
        if settle:
            await self.settle()

    async def ledger(self, rule: str | None = None) -> list[dict[str, Any]]:
        rows = list(reversed(await self.store.decisions.recent(limit=10_000)))
        return [r for r in rows if rule is None or r["rule"] == rule]


async def events(store: Store, tmp_path: Path, rules: str) -> Events:
    r = Events(store, tmp_path, rules)
    await r.start()
    return r


def deploy(id: str, subject: str, env: str = "prod", **data: Any) -> dict[str, Any]:
    return {"id": id, "type": "deploy.finished", "subject": subject, "data": {"env": env, **data}}


async def test_an_event_rule_is_decided_through_the_guard_and_admitted(
    store: Store, tmp_path: Path
) -> None:
    r = await events(store, tmp_path, SMOKE)
    await r.event(deploy("d1", "shop/api"), deploy("d2", "shop/web", env="staging"))
    [admitted] = await r.ledger("smoke-check")
    assert admitted["verdict"] == "admitted"
    assert admitted["alertname"] == "event:deploy.finished"
    assert admitted["labels"]["subject"] == "shop/api"
    [run] = [d for d in await store.decisions.recent(limit=10) if d["verdict"] == "admitted"]
    assert run["guard_key"] == "smoke-check:smoke/shop%2Fapi"  # escaped: data is data
    # The same subject again, another event: the guard's key refuses it (run still going).
    await r.event(deploy("d3", "shop/api"))
    verdicts = [(d["verdict"], d["refusal"]) for d in await r.ledger("smoke-check")]
    assert verdicts == [("admitted", None), ("refused", "key_active")]


async def test_a_resent_event_is_decided_once(store: Store, tmp_path: Path) -> None:
    r = await events(store, tmp_path, SMOKE)
    await r.event(deploy("d1", "shop/api"))
    await r.finish("smoke-check")
    r.clock.now += 3600  # past the cooldown: only identity can refuse it now
    await r.event(deploy("d1", "shop/api"))
    await r.new_leader()  # identities are in the store, not in memory
    await r.event(deploy("d1", "shop/api"))
    ledger = await r.ledger()
    assert [d["verdict"] for d in ledger if d["rule"] == "smoke-check"] == ["admitted"]
    assert [d["verdict"] for d in ledger if d["rule"] is None] == ["duplicate", "duplicate"]
    # Another source with the same id is another event.
    await r.event({**deploy("d1", "shop/api"), "source": "other-ci"})
    assert len([d for d in await r.ledger("smoke-check") if d["verdict"] == "admitted"]) == 2


COUNTED = """
  - name: flapping-deploys
    event: ['type="deploy.finished"']
    count: {at_least: 3, within: 10m, same: [subject]}
    assert: {fact: deploys-flapping, with: {workload: "{{ event.subject }}"}, ttl: 1h}
"""


async def test_count_counts_events_by_their_same_fields(store: Store, tmp_path: Path) -> None:
    r = await events(store, tmp_path, COUNTED)
    await r.event(deploy("a1", "api"), deploy("b1", "web"), deploy("a2", "api"))
    assert await r.ledger("flapping-deploys") == []
    await r.event(deploy("a3", "api"))
    [asserted] = await r.ledger("flapping-deploys")
    assert asserted["verdict"] == "asserted"
    assert [f.fields for f in r.loop.engine.facts() if f.name == "deploys-flapping"] == [
        {"workload": "api"}
    ]


async def test_a_reload_keeps_counting_unless_the_counting_rule_changed(
    store: Store, tmp_path: Path
) -> None:
    """A rule file edited, or the rebuild after a store error, makes new rules: a rule
    whose events, conditions and `count` are unchanged keeps its windows (before, every
    reload forgot them); one whose `count` changed starts again."""
    r = await events(store, tmp_path, COUNTED)
    await r.event(deploy("a1", "api"), deploy("a2", "api"))
    other = SMOKE.replace("cooldown: 10m", "cooldown: 20m")
    await r.loop.use(r.rules(COUNTED.replace("ttl: 1h", "ttl: 2h") + other), ServiceCatalog())
    await r.event(deploy("a3", "api", env="staging"))
    assert [d["verdict"] for d in await r.ledger("flapping-deploys")] == ["asserted"]

    await r.event(deploy("w1", "web"), deploy("w2", "web"))
    await r.loop.use(r.rules(COUNTED.replace("within: 10m", "within: 15m")), ServiceCatalog())
    await r.event(deploy("w3", "web", env="staging"))
    assert [d["labels"]["subject"] for d in await r.ledger("flapping-deploys")] == ["api"]
    await r.event(deploy("w4", "web", env="staging"), deploy("w5", "web", env="staging"))
    assert [d["labels"]["subject"] for d in await r.ledger("flapping-deploys")] == ["api", "web"]


async def test_a_new_leader_recalls_the_windows_from_the_events_the_inbox_kept(
    store: Store, tmp_path: Path
) -> None:
    """A restart or a new leader counts on from the events already decided (the inbox keeps
    them), and only those within the window; before, it started counting again."""
    r = await events(store, tmp_path, COUNTED + SEQUENCE)

    def at(minutes_ago: float) -> str:
        return datetime.fromtimestamp(time.time() - 60 * minutes_ago, UTC).isoformat()

    await r.event(
        {**deploy("old", "api"), "time": at(12)},  # outside the 10-minute window by now
        {**deploy("a1", "api"), "time": at(5)},
        {"id": "s1", "type": "deploy.started", "subject": "web", "time": at(4)},
    )
    r.clock.now = time.time()  # the new leader's clock: now
    await r.new_leader()
    await r.event({**deploy("a2", "api"), "time": at(1)})
    assert await r.ledger("flapping-deploys") == []  # a1 and a2: two, not three
    await r.event({**deploy("w1", "web"), "time": at(0.5)}, {**deploy("a3", "api"), "time": at(0)})
    assert [(d["rule"], d["labels"]["subject"]) for d in await r.ledger() if d["rule"]] == [
        ("started-then-finished", "web"),  # s1, remembered across the new leader
        ("flapping-deploys", "api"),  # a1, a2, a3
    ]


SEQUENCE = """
  - name: started-then-finished
    event: ['type="deploy.finished"']
    after: {match: ['type="deploy.started"'], same: [subject], within: 30m}
    assert: {fact: deploy-seen, with: {workload: "{{ event.subject }}"}, ttl: 1h}
"""


JOINED = """
  - name: smoke-unless-frozen
    event: ['type="deploy.finished"']
    unless: [{fact: freeze, where: ['workload="{{ event.subject }}"']}]
    after: {match: ['type="deploy.started"'], same: [subject], within: 30m}
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ event.data.env }}"}}
    guard: {key: "smoke/{{ event.subject }}"}
"""


async def test_after_and_unless_join_events_with_facts(store: Store, tmp_path: Path) -> None:
    r = await events(store, tmp_path, JOINED)
    await r.event(deploy("f0", "api"))  # no deploy.started before it
    started = {"type": "deploy.started", "subject": "api", "data": {}}
    await r.event({"id": "s1", **started}, {"id": "s2", **started, "subject": "db"})
    await r.event(deploy("f1", "api"))
    [admitted] = await r.ledger("smoke-unless-frozen")
    assert admitted["verdict"] == "admitted"

    await r.event({"id": "z", "type": "freeze", "data": {"workload": "db"}})
    # A freeze is only a fact to join when a rule asserts it; events are `event` facts.
    assert [f for f in r.loop.engine.facts() if f.name == "freeze"] == []


@pytest.mark.parametrize(
    "rule, problem",
    [
        ("event: ['name=\"x\"']", "is no event field"),
        ("event: ['type=\"x\"']\n    match: ['alertname=\"A\"']", "exactly one"),
        ("match: ['data.env=\"x\"']", "no label name"),
        ("event: ['type=\"x\"']\n    firing_for: 5m", "does not take firing_for"),
    ],
)
def test_event_rules_are_checked_when_loaded(tmp_path: Path, rule: str, problem: str) -> None:
    from responder.decision.rules import load_rules
    from responder.exceptions import RuleError

    path = tmp_path / "r.yaml"
    path.write_text(f"rules:\n  - name: r\n    {rule}\n    assert: {{fact: f}}\n")
    with pytest.raises(RuleError, match=problem):
        load_rules([path])


# --- end to end: hostile event data to a real Prefect flow run, one literal argument each --


def record_event_rule() -> str:
    from tests.decision.test_injection import CORPUS

    data = [f"{{{{ event.data.v{i} }}}}" for i in range(len(CORPUS))]
    rule = {
        "name": "record-hostile-event",
        "event": ['type="injection.probe"', 'data.kind="probe"'],
        "run": {
            "flow": "record-argv",
            "parameters": {
                "recorder": "{{ vars.recorder }}",
                "workdir": "{{ vars.workdir }}",
                "labels": data,
                "annotations": ["{{ event.subject }}"],
                "forge": [],
            },
        },
        "guard": {"key": "record/{{ event.id }}"},
    }
    return yaml.safe_dump({"rules": [rule]})


@pytest.mark.prefect
async def test_hostile_event_data_reaches_a_real_flow_run_as_literal_arguments(
    prefect_api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event rule, through intake, the loop, the guard and dispatch to a real Prefect
    flow run: each value of the label-injection corpus arrives as one argument, byte for
    byte, and a resent event makes no second run."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from tests.decision.test_injection import CORPUS, deploy_record_argv, responder
    from tests.helpers import wait_for
    from tests.intake.test_app import decisions

    record_argv, recorder, workdir, rules = await deploy_record_argv(tmp_path, monkeypatch)
    (rules / "record.yaml").write_text(record_event_rule())
    subject = "$(touch PWNED); {{ 7*7 }}"
    event = {
        "specversion": "1.0",
        "id": "probe-1",
        "source": "tests",
        "type": "injection.probe",
        "subject": subject,
        "data": {"kind": "probe", **{f"v{i}": v for i, v in enumerate(CORPUS)}},
    }
    body = json.dumps(event).encode()
    headers = {"content-type": "application/cloudevents+json"}
    async with responder(
        tmp_path,
        rules,
        prefect_api_url=prefect_api_url,
        rule_vars={"recorder": str(recorder), "workdir": str(workdir)},
    ) as (client, _):
        for _ in range(2):  # the second is a resend: a duplicate
            response = await client.post("/api/v1/events", content=body, headers=headers)
            assert response.status_code == 200, response.text

        async def dispatched() -> dict[str, Any] | None:
            rows = [r for r in await decisions(client) if r["rule"] == "record-hostile-event"]
            return rows[0] if rows and rows[0]["flow_run_id"] else None

        decision = await wait_for(dispatched, timeout=30)
        assert decision["verdict"] == "admitted", decision["reason"]
        async with get_client() as prefect:
            flow_run = await prefect.read_flow_run(UUID(decision["flow_run_id"]))
        assert flow_run.parameters["labels"] == CORPUS
        state = await asyncio.to_thread(
            functools.partial(run_flow, record_argv, flow_run, return_type="state")
        )
        assert state.is_completed(), state.message

        async def final() -> str | None:
            rows = [r for r in await decisions(client) if r["rule"] == "record-hostile-event"]
            return rows[0]["flow_run_state"]  # type: ignore[no-any-return]

        assert await wait_for(final, timeout=30) == "COMPLETED"
        verdicts = [r["verdict"] for r in await decisions(client)]
        assert sorted(verdicts) == ["admitted", "duplicate"]

    received = [bytes.fromhex(arg) for arg in json.loads((workdir / "argv.json").read_text())]
    assert received == [b"--", *(v.encode() for v in CORPUS), subject.encode()]
    assert [path.name for path in workdir.iterdir()] == ["argv.json"]  # no PWNED
