from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from responder.decision.engine import Engine
from responder.decision.rules import RuleBook, load_rule_text
from responder.events.webhook import Alert

RULES = """
rules:
  - name: restart
    match: ['alertname="ServiceDown"', 'severity=~"critical|page"']
    run: {flow: restart-service}
    guard: {key: "k"}
  - name: dotted-hosts
    match: ['instance=~"host-[0-9]+\\\\.example"']
    run: {flow: restart-service}
    guard: {key: "k"}
  - name: not-prod
    match: ['alertname="ServiceDown"', 'env!="prod"', 'team!~"db|storage"']
    run: {flow: restart-service}
    guard: {key: "k"}
"""


def book(text: str = RULES) -> RuleBook:
    rules, sources = load_rule_text(text, "test.yaml")
    return RuleBook(tuple(rules), tuple(sources))


def alert(fp: str = "aa", status: str = "firing", **labels: str) -> Alert:
    return Alert(
        status=status,  # type: ignore[arg-type]
        labels=labels,
        startsAt=datetime(2026, 11, 25, tzinfo=UTC),
        fingerprint=fp,
    )


def fired(engine: Engine, a: Alert) -> list[str]:
    return [m.rule.name for m in engine.assert_alert(a)]


def test_equality_and_regex_matchers() -> None:
    engine = Engine(book())
    a = alert("01", alertname="ServiceDown", severity="critical", env="prod")
    assert fired(engine, a) == ["restart"]
    b = alert("02", alertname="ServiceDown", severity="criticalX", env="e2e")
    assert fired(engine, b) == ["not-prod"]


def test_an_engine_holds_no_native_ruleset_until_used_then_decides_alike() -> None:
    engine = Engine(book())  # as the engine loop's first, until the start's rebuild
    assert engine._host._ruleset_list == []
    a = alert("01", alertname="ServiceDown", severity="critical", env="prod")
    assert fired(engine, a) == ["restart"]
    compiled = Engine(book())
    compiled.compile()
    assert len(engine._host._ruleset_list) == len(compiled._host._ruleset_list) > 0
    engine.close()
    Engine(book()).close()  # never used: nothing to hand back


def test_regex_escapes_mean_what_alertmanager_means() -> None:
    engine = Engine(book())
    assert fired(engine, alert("03", instance="host-1.example")) == ["dotted-hosts"]
    # durable_rules' own regex dialect would accept this; Alertmanager's does not.
    assert fired(engine, alert("04", instance="host-1Xexample")) == []


def test_missing_labels_match_as_empty_strings() -> None:
    engine = Engine(book())
    # No env, no team: both negative matchers hold, as in Alertmanager.
    assert fired(engine, alert("05", alertname="ServiceDown")) == ["not-prod"]
    assert fired(engine, alert("06", alertname="ServiceDown", team="db")) == []


def test_same_incident_asserted_twice_fires_once() -> None:
    engine = Engine(book())
    a = alert("07", alertname="ServiceDown", severity="page", env="prod")
    assert fired(engine, a) == ["restart"]
    assert fired(engine, a) == []
    assert engine.fact_count == 1


def test_retract_then_reassert_fires_again() -> None:
    engine = Engine(book())
    a = alert("08", alertname="ServiceDown", severity="page", env="prod")
    assert fired(engine, a) == ["restart"]
    assert engine.retract_alert(a) == []
    assert engine.fact_count == 0
    assert not engine.holds_alert(a.incident)
    assert engine.retract_alert(a) == []  # resolving twice is harmless
    assert fired(engine, a) == ["restart"]


def test_many_alerts_across_partitions() -> None:
    engine = Engine(book())
    hits = sum(
        len(
            engine.assert_alert(
                alert(f"{i:x}", alertname="ServiceDown", severity="critical", env="prod")
            )
        )
        for i in range(5000)
    )
    assert hits == 5000
    assert engine.fact_count == 5000


def test_no_rules_is_fine(tmp_path: Path) -> None:
    engine = Engine(book("rules: []\n"))
    assert fired(engine, alert("09", alertname="X")) == []


CHAIN = """
rules:
  - name: zone-outage
    description: Many nodes down in one zone is an outage, not a node problem.
    match: ['alertname="NodeDown"']
    count: {at_least: 3, within: 2m, same: [zone]}
    assert: {fact: zone-outage, with: {zone: "{{ alert.labels.zone }}"}, ttl: 30m}
  - name: drain-node
    priority: 5
    match: ['alertname=~"NodeDown|NodeNotReady"']
    unless: [{fact: zone-outage, where: ['zone="{{ alert.labels.zone }}"']}]
    run: {flow: restart-service}
    guard: {key: "drain/{{ alert.labels.instance }}"}
  - name: rollback
    match: ['alertname="KubePodCrashLooping"']
    when: [{fact: deploy, where: ['workload="{{ alert.labels.deployment }}"']}]
    run: {flow: restart-service, parameters: {to: "{{ facts.deploy.previous }}"}}
    guard: {key: "rollback/{{ alert.labels.deployment }}"}
  - name: escalate
    match: ['alertname="ServiceDown"']
    match_annotations: ['runbook_url=~"https://.*"']
    firing_for: 10m
    run: {flow: restart-service}
    guard: {key: "page/{{ alert.labels.instance }}"}
  - name: notify-resolved
    status: resolved
    match: ['alertname="ServiceDown"']
    run: {flow: restart-service}
    guard: {key: "resolved/{{ alert.labels.instance }}"}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def node(fp: str, zone: str, instance: str, at: float | None = None) -> Alert:
    """A NodeDown alert that started at `at` (default: the start of the test clock)."""
    start = datetime.fromtimestamp(at, UTC) if at else datetime(2026, 11, 25, tzinfo=UTC)
    labels = {"alertname": "NodeDown", "zone": zone, "instance": instance}
    return Alert(status="firing", labels=labels, startsAt=start, fingerprint=fp)


def test_count_asserts_a_fact_that_suppresses_other_rules() -> None:
    clock = Clock()
    engine = Engine(book(CHAIN), clock=clock)
    assert fired(engine, node("a1", "eu-1", "n1")) == ["drain-node"]
    assert fired(engine, node("a2", "eu-1", "n2")) == ["drain-node"]
    # A node in another zone does not count towards eu-1.
    assert fired(engine, node("b1", "us-1", "m1")) == ["drain-node"]
    # The third in eu-1 fills the window: the outage rule holds, and the higher-priority
    # drain decision comes first, before the fact exists.
    assert fired(engine, node("a3", "eu-1", "n3")) == ["drain-node", "zone-outage"]
    from responder.events.facts import Fact

    outage = Fact("zone-outage", {"zone": "eu-1"}, clock.now + 1800)
    assert engine.assert_fact(outage) == []
    # Now node remediation in eu-1 stops; us-1 is unaffected.
    assert fired(engine, node("a4", "eu-1", "n4")) == ["zone-outage"]
    assert fired(engine, node("b2", "us-1", "m2")) == ["drain-node"]
    # When the fact expires, eu-1 nodes are remediated again.
    _, expired = engine.tick(clock.now + 1801)
    assert [f.name for f in expired] == ["zone-outage"]
    clock.now += 1801  # a node failing now is no burst with those of half an hour ago
    assert fired(engine, node("a5", "eu-1", "n5", at=clock.now)) == ["drain-node"]


def test_count_window_goes_by_start_times() -> None:
    clock = Clock()
    engine = Engine(book(CHAIN), clock=clock)
    fired(engine, node("a1", "eu-1", "n1", at=clock.now))
    fired(engine, node("a2", "eu-1", "n2", at=clock.now + 60))
    # Started 121 s after the first: the first falls out of the 2-minute window.
    assert "zone-outage" not in fired(engine, node("a3", "eu-1", "n3", at=clock.now + 121))
    # Arriving late but started with the second and third: a burst of three.
    assert "zone-outage" in fired(engine, node("a4", "eu-1", "n4", at=clock.now + 90))


def test_a_fact_arriving_later_makes_a_held_alert_hold() -> None:
    from responder.events.facts import Fact

    engine = Engine(book(CHAIN))
    crash = alert("c1", alertname="KubePodCrashLooping", deployment="api")
    assert fired(engine, crash) == []
    other = Fact("deploy", {"workload": "web", "previous": "v1"}, 2e9)
    assert engine.assert_fact(other) == []
    deploy = Fact("deploy", {"workload": "api", "previous": "v41"}, 2e9)
    [match] = engine.assert_fact(deploy)
    assert match.rule.name == "rollback"
    assert match.alert.incident == crash.incident
    assert match.facts["deploy"]["previous"] == "v41"


def test_firing_for_waits_until_the_alert_has_fired_long_enough() -> None:
    clock = Clock()
    engine = Engine(book(CHAIN), clock=clock)
    down = Alert(
        status="firing",
        labels={"alertname": "ServiceDown", "instance": "h1"},
        annotations={"runbook_url": "https://runbooks/x"},
        startsAt=datetime.fromtimestamp(clock.now, UTC),
        fingerprint="d1",
    )
    no_runbook = down.model_copy(update={"fingerprint": "d2", "annotations": {}})
    assert fired(engine, down) == []
    assert fired(engine, no_runbook) == []
    due, _ = engine.tick(clock.now + 599)
    assert due == []
    clock.now += 600
    due, _ = engine.tick()
    assert [(m.rule.name, m.alert.fingerprint) for m in due] == [("escalate", down.fingerprint)]
    # A resolved alert is not escalated, and rules on resolutions hold for it.
    later = down.model_copy(
        update={"fingerprint": "d3", "starts_at": datetime.fromtimestamp(clock.now, UTC)}
    )
    assert fired(engine, later) == []
    resolved = later.model_copy(update={"status": "resolved"})
    assert [m.rule.name for m in engine.retract_alert(resolved)] == ["notify-resolved"]
    clock.now += 600
    assert engine.tick()[0] == []


def test_retract_facts_by_condition() -> None:
    from responder.decision.rules import FactCondition
    from responder.events.facts import Fact

    engine = Engine(book(CHAIN))
    engine.assert_fact(Fact("zone-outage", {"zone": "eu-1"}, 2e9))
    engine.assert_fact(Fact("zone-outage", {"zone": "us-1"}, 2e9))
    condition = FactCondition(fact="zone-outage", where=['zone="{{ alert.labels.zone }}"'])
    gone = engine.retract_facts(condition, node("e1", "eu-1", "n1"))
    assert [f.fields["zone"] for f in gone] == ["eu-1"]
    assert [f.fields["zone"] for f in engine.facts()] == ["us-1"]


def test_facts_reach_every_partition_an_alert_lands_in() -> None:
    from responder.events.facts import Fact

    rules = """
rules:
  - name: gated
    match: ['alertname="KubePodCrashLooping"']
    when: [{fact: deploy, where: ['workload="{{ alert.labels.deployment }}"']}]
    assert: {fact: seen, with: {d: "{{ alert.labels.deployment }}"}}
  - name: muted
    match: ['alertname="ServiceDown"']
    unless: [{fact: freeze}]
    assert: {fact: seen, with: {d: x}}
"""
    engine = Engine(book(rules), partitions=16)
    # Facts asserted before any alert: no partition holds alerts yet.
    engine.assert_fact(Fact("deploy", {"workload": "api"}, 2e9))
    engine.assert_fact(Fact("freeze", {}, 2e9))
    crashes = [
        alert(f"c{i:x}", alertname="KubePodCrashLooping", deployment="api") for i in range(64)
    ]
    downs = [alert(f"d{i:x}", alertname="ServiceDown") for i in range(64)]
    assert all(fired(engine, a) == ["gated"] for a in crashes)
    assert all(fired(engine, a) == [] for a in downs)


SEQUENCE = """
rules:
  - name: down-after-oom
    match: ['alertname="ServiceDown"']
    after: {match: ['alertname="OOMKilled"'], same: [instance], within: 10m}
    run: {flow: restart-service}
    guard: {key: "k/{{ alert.labels.instance }}"}
"""


def started(fp: str, name: str, instance: str, at: float) -> Alert:
    labels = {"alertname": name, "instance": instance}
    return Alert(
        status="firing", labels=labels, startsAt=datetime.fromtimestamp(at, UTC), fingerprint=fp
    )


def test_a_sequence_holds_only_after_its_first_alert_within_the_window() -> None:
    clock = Clock()
    engine = Engine(book(SEQUENCE), clock=clock)
    t = clock.now
    fired(engine, started("a1", "OOMKilled", "n1", t))
    assert fired(engine, started("b1", "ServiceDown", "n1", t + 300)) == ["down-after-oom"]
    # Another instance, or too late, or the wrong order: no sequence.
    assert fired(engine, started("b2", "ServiceDown", "n2", t + 300)) == []
    fired(engine, started("a3", "OOMKilled", "n3", t))
    assert fired(engine, started("b3", "ServiceDown", "n3", t + 601)) == []
    fired(engine, started("b4", "ServiceDown", "n4", t))
    fired(engine, started("a4", "OOMKilled", "n4", t + 150))
    [(_, failure)] = engine.explain(started("b5", "ServiceDown", "n4", t + 30))
    assert failure is not None and failure.startswith("after: no alert")
    # Predecessors are forgotten once no new alert could follow them.
    clock.now = t + 700
    engine.tick()
    assert fired(engine, started("b6", "ServiceDown", "n1", clock.now)) == []
    assert engine._predecessors.keys() == {("down-after-oom", ("n4",))}


def test_an_outcome_fact_joins_an_alert_whose_label_is_long() -> None:
    from responder.decision.conditions import fact_meets
    from responder.decision.rules import FactCondition
    from responder.events.cloudevents import Outcome

    long = "h" * 10_000  # within the webhook's label limit
    outcome = Outcome(
        decision_id=1,
        state="FAILED",
        rule="r",
        flow="f",
        key="k",
        incident="aa@x",
        labels={"instance": long},
    ).fact(expires_at=0.0)
    condition = FactCondition(
        fact="outcome", where=['state!="COMPLETED"', 'instance="{{ alert.labels.instance }}"']
    )
    assert fact_meets(outcome, condition, alert(instance=long))
    assert not fact_meets(outcome, condition, alert(instance=long + "x"))
