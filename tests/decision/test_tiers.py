"""Guard defaults by tier: a rule's decisions inherit them, and the stricter value wins."""

from __future__ import annotations

from typing import Any

from responder.decision.decisions import decide
from responder.decision.engine import Match
from responder.decision.rules import GuardSpec
from responder.decision.services import ServiceCatalog
from responder.decision.tiers import TierDefaults
from tests.decision.test_decisions import alert, rule

CATALOG = ServiceCatalog.model_validate(
    {
        "services": {
            "checkout": {"tier": 0, "hosts": 20},
            "search": {"tier": 2},
            "blog": {"tier": 3},
        },
        "tiers": {
            0: {"approval": True, "cooldown": "10m", "max_attempts": 1, "max_active": 2},
            2: {"cooldown": "5m", "cooldown_failed": "30m"},
        },
    }
)


def decided(service: str, **guard: Any) -> Any:
    match = Match(
        rule("restart", key="r/{{ alert.labels.instance }}", **guard),
        alert(service=service, instance="h1"),
        {},
    )
    return decide(match, {}, CATALOG)


def test_a_rule_inherits_its_services_tier_defaults() -> None:
    d = decided("checkout")
    assert d.parameters["approval_required"] is True
    assert (d.policy.cooldown, d.policy.max_attempts, d.active_cap) == (600.0, 1, 2)
    search = decided("search", cooldown="1m")
    assert (search.policy.cooldown, search.policy.cooldown_failed) == (300.0, 1800.0)
    assert "approval_required" not in search.parameters
    # A service without tier defaults, or no service at all: the rule as written.
    assert decided("blog", cooldown="1m").policy.cooldown == 60.0
    assert decided("unknown").policy == rule("x", key="r/{{ alert.labels.instance }}").guard


def test_at_run_time_the_stricter_of_rule_and_tier_wins() -> None:
    tight = decided("checkout", cooldown="1h", max_attempts=3, max_active="50%")
    assert (tight.policy.cooldown, tight.policy.max_attempts) == (3600.0, 1)
    assert tight.active_cap == 2  # 50% of 20 hosts is 10; the tier says 2
    assert decided("checkout", max_active=1).active_cap == 1
    assert decided("search", cooldown_failed="2h").policy.cooldown_failed == 7200.0


def test_looser_names_only_what_the_rule_sets_looser() -> None:
    defaults = TierDefaults(approval=True, cooldown=600, max_attempts=2)
    guard = GuardSpec.model_validate(
        {"key": "k", "cooldown": "1m", "approval": False, "max_attempts": 2}
    )
    assert [name for name, _ in defaults.looser(guard)] == ["approval", "cooldown"]
    assert defaults.looser(GuardSpec(key="k")) == []  # unset: inherited, not loosened
