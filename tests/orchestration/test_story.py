"""A flow run's story in the Prefect UI: hostile labels stay inert text."""

from __future__ import annotations

from datetime import UTC, datetime

from responder.control.runs import ActiveRun
from responder.events.webhook import Alert
from responder.orchestration.story import (
    dispatch_story,
    link,
    outcome_story,
    run_name,
    run_tags,
    text,
)

HOSTILE = {
    "alertname": "ServiceDown",
    "instance": "host-1",
    "service": "checkout",
    "note": "![x](http://tracker.invalid/p.png) [click](javascript:alert(1)) <img src=x>",
    "pipe": "a | b\n# heading",
}


def a_run(**labels: str) -> ActiveRun:
    return ActiveRun(
        decision_id=7,
        flow_run_id=None,
        flow="restart-service",
        rule="restart-crashed-service",
        guard_key="restart-service/host-1/checkout",
        incident="4c49c27c50dac262@2026-11-25T23:17:23.549000+00:00",
        alertname=labels.get("alertname", ""),
        parameters={"host": "host-1", "service": "checkout"},
        labels=labels,
    )


def an_alert(generator_url: str) -> Alert:
    return Alert.model_validate(
        {
            "status": "firing",
            "labels": HOSTILE,
            "annotations": {"summary": "**bold** `code`"},
            "startsAt": datetime(2026, 11, 25, 23, 17, tzinfo=UTC).isoformat(),
            "generatorURL": generator_url,
            "fingerprint": "4c49c27c50dac262",
        }
    )


def test_a_run_is_named_for_what_it_does_and_where() -> None:
    assert run_name(a_run(**HOSTILE)) == "restart-service · ServiceDown checkout@host-1"
    assert run_name(a_run()) == "restart-service · restart-crashed-service"
    assert len(run_name(a_run(alertname="x" * 500))) == 120


def test_tags_carry_the_incident_and_stay_short() -> None:
    tags = run_tags(a_run(alertname="A" * 500))
    assert "fingerprint:4c49c27c50dac262" in tags
    assert "incident:4c49c27c50dac262@2026-11-25T23:17:23.549000+00:00" in tags
    assert "decision:7" in tags
    assert max(len(tag) for tag in tags) == 100


def test_label_values_cannot_become_links_images_html_or_table_cells() -> None:
    story = dispatch_story(
        a_run(**HOSTILE),
        {"id": 7, "created_at": 0.0, "reason": "admitted [x](http://evil.invalid)", "policy": {}},
        an_alert("javascript:alert(1)"),
        [],
        None,
    )
    assert "![x](http" not in story
    assert "](javascript:" not in story
    assert "<img" not in story and "&lt;img src=x&gt;" in story
    assert r"\[x\]\(http://evil.invalid\)" in story
    assert "a \\| b # heading" in story  # one cell, one line
    assert r"\*\*bold\*\* \`code\`" in story
    assert "Prometheus graph" in story and "](javascript" not in story


def test_only_http_urls_become_links_and_their_parentheses_are_encoded() -> None:
    assert link("graph", "http://p:9090/graph?g0.expr=up)") == (
        "[graph](http://p:9090/graph?g0.expr=up%29)"
    )
    assert link("graph", "javascript:alert(1)") == "graph"
    assert link("graph", "//no-scheme") == "graph"


def test_the_story_links_the_alert_and_lists_earlier_decisions() -> None:
    history = [
        {"id": 7, "created_at": 10.0, "rule": "r", "verdict": "admitted", "reason": "now"},
        {
            "id": 3,
            "created_at": 1.0,
            "rule": "restart-crashed-service",
            "verdict": "admitted",
            "reason": "first try",
            "flow_run_id": "x",
            "flow_run_state": "FAILED",
        },
    ]
    story = dispatch_story(
        a_run(**HOSTILE),
        {"id": 7, "created_at": 10.0, "reason": "ok", "policy": {"mutex": ["host:host-1"]}},
        an_alert("http://127.0.0.1:9090/graph?g0.expr=up"),
        history,
        "http://am:hunter2@127.0.0.1:9093",
    )
    assert "[Prometheus graph of the alert's expression](http://127.0.0.1:9090/graph" in story
    assert "[this alert in Alertmanager](http://127.0.0.1:9093/#/alerts?filter=" in story
    assert "hunter2" not in story
    assert "| mutex | host:host-1 |" in story
    assert "| 3 |" in story and "FAILED" in story and "first try" in story
    assert "| 7 |" not in story  # the decision itself is not an earlier one


def test_text_cuts_long_values() -> None:
    assert text("x" * 1000, 10) == "x" * 9 + "…"
    assert "FAILED" in outcome_story(7, "FAILED", "exit 1")
