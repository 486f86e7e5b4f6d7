"""The guard policy a decision is recorded with, and read back when its run ends."""

from __future__ import annotations

from dataclasses import replace

from responder.control.policy import Batch, RunPolicy
from responder.decision.rules import GuardSpec, RunBatch
from tests.control.test_guard import decision


def test_the_policy_written_is_the_policy_read() -> None:
    d = replace(
        decision(),
        mutex=("host:h1",),
        policy=GuardSpec(key="k", cooldown=60, cooldown_failed=600, silence=True),
        batch=RunBatch(window=5, over="hosts"),
    )
    policy = RunPolicy.of(d)
    assert policy == RunPolicy(("host:h1",), 60.0, 600.0, True, Batch(5.0, "hosts"))
    assert RunPolicy.from_json(policy.to_json()) == policy
    assert RunPolicy.from_json(RunPolicy().to_json()) == RunPolicy()
    assert "batch" not in RunPolicy().to_json()


def test_a_decision_never_admitted_has_no_policy_to_apply() -> None:
    assert RunPolicy.from_json(None) == RunPolicy()
    assert RunPolicy.from_json(None).cooldown_after("FAILED") == 0.0


def test_the_cooldown_after_a_run_depends_on_how_it_ended() -> None:
    both = RunPolicy(cooldown=60, cooldown_failed=600)
    assert both.cooldown_after("COMPLETED") == 60
    assert both.cooldown_after("FAILED") == 600
    assert both.cooldown_after("EXPIRED") == 600
    assert RunPolicy(cooldown=60).cooldown_after("CRASHED") == 60
    assert RunPolicy(cooldown=60, cooldown_failed=0).cooldown_after("FAILED") == 0
