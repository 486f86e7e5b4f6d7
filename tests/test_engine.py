from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from responder.engine import Engine
from responder.models import Alert
from responder.rules import RuleBook, load_rule_text

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
    assert engine.retract_alert(a)
    assert engine.fact_count == 0
    assert not engine.retract_alert(a)
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
