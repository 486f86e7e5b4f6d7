"""Rendering a match into a decision: its guard key and mutex names."""

from __future__ import annotations

from typing import Any

from responder.decision.decisions import decide
from responder.decision.engine import Match
from responder.decision.rules import Rule
from responder.events.webhook import Alert


def rule(name: str, **guard: Any) -> Rule:
    return Rule.model_validate(
        {
            "name": name,
            "match": ['alertname="ServiceDown"'],
            "run": {"flow": "http-call", "parameters": {"url": "http://pager"}},
            "guard": guard,
        }
    )


def alert(**labels: str) -> Alert:
    return Alert.model_validate(
        {
            "status": "firing",
            "labels": {"alertname": "ServiceDown", **labels},
            "startsAt": "2026-11-25T23:17:23.549Z",
            "fingerprint": "4c49c27c50dac262",
        }
    )


def test_label_values_cannot_move_a_keys_separators() -> None:
    page = rule(
        "page",
        key="{{ alert.labels.instance }}/{{ alert.labels.service }}",
        mutex=["host:{{ alert.labels.instance }}:{{ alert.labels.service }}"],
    )
    one = decide(Match(page, alert(instance="a/b", service="c")), {})
    other = decide(Match(page, alert(instance="a", service="b/c")), {})
    assert one.key == "page:a%2Fb/c"
    assert other.key == "page:a/b%2Fc"
    colon = decide(Match(page, alert(instance="a:b", service="c")), {})
    assert colon.mutex == ("host:a%3Ab:c",)
    assert decide(Match(page, alert(instance="a", service="b:c")), {}).mutex == ("host:a:b%3Ac",)
    percent = decide(Match(page, alert(instance="a%2Fb", service="c")), {})
    assert percent.key == "page:a%252Fb/c"


def test_a_key_is_its_rules_own_unless_the_rule_shares_it() -> None:
    firing = alert(instance="outage", service="cart")
    still_down = rule(
        "page-still-down", key="page/{{ alert.labels.instance }}/{{ alert.labels.service }}"
    )
    outage = rule("page-service-outage", key="page/outage/{{ alert.labels.service }}")
    assert decide(Match(still_down, firing), {}).key == "page-still-down:page/outage/cart"
    assert decide(Match(outage, firing), {}).key == "page-service-outage:page/outage/cart"

    a = rule("a", key="page/{{ alert.labels.service }}", key_scope="shared")
    b = rule("b", key="page/{{ alert.labels.service }}", key_scope="shared")
    assert decide(Match(a, firing), {}).key == decide(Match(b, firing), {}).key == "page/cart"
    # A label cannot make a shared key look like a rule's own.
    forged = rule("c", key="{{ alert.labels.service }}", key_scope="shared")
    assert decide(Match(forged, alert(service="a:page/x")), {}).key == "a%3Apage%2Fx"
