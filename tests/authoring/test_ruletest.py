"""`responder test`: the shipped rule library passes its own tests, and failures are readable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from responder.cli import app
from tests.helpers import ROOT


def test_the_rule_library_passes_its_tests() -> None:
    result = CliRunner().invoke(app, ["test", str(ROOT / "rules" / "tests")])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") >= 14
    assert "FAIL" not in result.output


def test_a_wrong_expectation_fails_with_a_diff(tmp_path: Path) -> None:
    shutil.copy(ROOT / "rules" / "restart-service.yaml", tmp_path)
    (tmp_path / "t.yaml").write_text(
        """
rules: [restart-service.yaml]
vars: {service_control_url: "http://ctl"}
tests:
  - name: expects the wrong verdict
    steps:
      - alerts: [{labels: {alertname: ServiceDown, instance: h1, service: s, severity: page}}]
    expect:
      decisions: [{rule: restart-crashed-service, verdict: refused}]
"""
    )
    result = CliRunner().invoke(app, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert "FAIL" in result.output
    assert '-      "verdict": "refused"' in result.output
    assert '+      "verdict": "admitted"' in result.output


def test_an_unexpected_extra_decision_fails(tmp_path: Path) -> None:
    shutil.copy(ROOT / "rules" / "restart-service.yaml", tmp_path)
    (tmp_path / "t.yaml").write_text(
        """
rules: [restart-service.yaml]
vars: {service_control_url: "http://ctl"}
tests:
  - name: expects nothing
    steps:
      - alerts: [{labels: {alertname: ServiceDown, instance: h1, service: s, severity: page}}]
    expect: {decisions: []}
"""
    )
    result = CliRunner().invoke(app, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert '"rule": "restart-crashed-service"' in result.output


def test_a_malformed_test_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("rules: [x.yaml]\ntests:\n  - name: a\n    stpes: []\n")
    result = CliRunner().invoke(app, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 't.yaml'}:4" in result.output
    assert "stpes" in result.output


def run_tests(tmp_path: Path, text: str, *rules: str) -> tuple[int, str]:
    """`responder test` on one test file next to copies of the shipped `rules`."""
    for rule in rules:
        shutil.copy(ROOT / "rules" / rule, tmp_path)
    (tmp_path / "t.yaml").write_text(text)
    result = CliRunner().invoke(app, ["test", str(tmp_path / "t.yaml")])
    return result.exit_code, result.output


DOWN = "{labels: {alertname: ServiceDown, instance: h1, service: s, severity: page}}"


def test_a_finish_on_a_key_no_run_holds_fails_the_test(tmp_path: Path) -> None:
    code, output = run_tests(
        tmp_path,
        f"""
rules: [restart-service.yaml]
vars: {{service_control_url: "http://ctl"}}
tests:
  - name: finishes a key with a typo
    steps:
      - alerts: [{DOWN}]
      - at: 1m
        finish: [{{key: "restart-crashed-service:restart-service/h1/S"}}]
    expect:
      decisions: [{{rule: restart-crashed-service, verdict: admitted}}]
""",
        "restart-service.yaml",
    )
    assert code == 1
    assert (
        "error: step at 60s: finish: no flow run holds key "
        "'restart-crashed-service:restart-service/h1/S'; runs hold: "
        "'restart-crashed-service:restart-service/h1/s'"
    ) in output


ESCALATION = f"""
rules: [restart-service.yaml, escalation.yaml]
vars: {{service_control_url: "http://ctl", pager_url: "http://pager/events"}}
tests:
  - name: still down after 15 minutes
    steps:
      - alerts: [{DOWN}]
UNTIL
    expect:
      decisions:
        - {{rule: restart-crashed-service, verdict: admitted}}
        - {{rule: page-still-down, verdict: admitted}}
"""


@pytest.mark.parametrize(("until", "passes"), [("", False), ("    until: 15m", True)])
def test_time_runs_on_until_every_timer_due_has_fired(
    tmp_path: Path, until: str, passes: bool
) -> None:
    # No step at 15m: without `until`, the test ends at its last step, before the timer.
    code, output = run_tests(
        tmp_path,
        ESCALATION.replace("UNTIL\n", until + "\n" if until else ""),
        "restart-service.yaml",
        "escalation.yaml",
    )
    assert (code == 0) is passes, output


@pytest.mark.parametrize(
    ("reason", "passes"),
    [("does not fit", False), ("parameters do not fit flow 'restart-service': host:", True)],
)
def test_an_expectation_names_the_error_reason(tmp_path: Path, reason: str, passes: bool) -> None:
    code, output = run_tests(
        tmp_path,
        f"""
rules: [restart-service.yaml]
vars: {{service_control_url: "http://ctl"}}
tests:
  - name: a host label that is no host name
    steps:
      - alerts:
          - {{labels: {{alertname: ServiceDown, instance: "h1;rm", service: s, severity: page}}}}
    expect:
      decisions: [{{rule: restart-crashed-service, verdict: error, reason: "{reason}"}}]
""",
        "restart-service.yaml",
    )
    assert (code == 0) is passes, output
    if not passes:
        assert '+      "reason": "parameters do not fit flow' in output


def test_fixtures_have_their_place_and_a_broken_file_does_not_stop_the_others(
    tmp_path: Path,
) -> None:
    shutil.copy(ROOT / "rules" / "rollback.yaml", tmp_path)
    tests = tmp_path / "tests"
    (tests / "fixtures").mkdir(parents=True)
    # A catalog and a fact fixture where `responder test` does not take them for tests.
    (tests / "fixtures" / "services.yaml").write_text("services: {shop: {tier: 0}}\n")
    (tests / "fixtures" / "deploys.yaml").write_text(
        "facts:\n  - {fact: event, with: {type: deploy.finished, namespace: shop, "
        "workload: web, previous_revision: '3'}, ttl: 1h}\n"
    )
    (tests / "rollback.yaml").write_text(
        """
rules: [../rollback.yaml]
services: fixtures/services.yaml
facts: fixtures/deploys.yaml
vars: {deploy_api: "http://deploys"}
tests:
  - name: a crash-loop after a deploy held as a fixture is rolled back
    steps:
      - alerts: [{labels: {alertname: KubePodCrashLooping, namespace: shop, deployment: web}}]
    expect:
      decisions: [{rule: rollback-crashloop-after-deploy, verdict: admitted}]
"""
    )
    (tests / "broken.yaml").write_text("rules: [../rollback.yaml]\ntests: []\n")
    result = CliRunner().invoke(app, ["test", str(tests)])
    assert result.exit_code == 1
    assert f"ERROR {tests / 'broken.yaml'}:2" in result.output
    assert f"ok    {tests / 'rollback.yaml'}: a crash-loop after a deploy" in result.output
    assert str(tests / "fixtures") not in result.output


LADDER = f"""
rules: [restart-service.yaml, escalation.yaml]
vars: {{service_control_url: "http://ctl", pager_url: "http://pager/events"}}
tests:
  - name: restarted again after the cooldown (a durable timer), then refused and paged
    steps:
      - alerts: [{DOWN}]
      - at: 1m
        finish: [{{key: "restart-crashed-service:restart-service/h1/s"}}]
UNTIL
    expect:
      decisions:
        - {{rule: restart-crashed-service, verdict: admitted}}
        - {{rule: page-still-down, verdict: admitted}}
        - {{rule: restart-crashed-service, verdict: admitted}}
"""


@pytest.mark.parametrize(("until", "passes"), [("", False), ("    until: 16m1s", True)])
def test_the_ladders_next_attempt_fires_within_until(
    tmp_path: Path, until: str, passes: bool
) -> None:
    # The cooldown (15m) ends at 16m: the ladder's timer; page-still-down's is at 15m.
    code, output = run_tests(
        tmp_path,
        LADDER.replace("UNTIL\n", until + "\n" if until else ""),
        "restart-service.yaml",
        "escalation.yaml",
    )
    assert (code == 0) is passes, output


NEVER_FINISHED = """
rules: [deploys.yaml]
vars: {smoke_url: "http://smoke", pager_url: "http://pager/page", prometheus_url: "http://p"}
tests:
  - name: a deploy that never finishes pages
    steps:
      - events: [{type: deploy.started, id: s1, subject: shop/api}]
FOLLOWER
UNTIL
    expect:
      decisions:
        - {rule: deploy-never-finished, verdict: deferred}
        - {rule: deploy-never-finished, verdict: admitted}
"""


@pytest.mark.parametrize(
    ("follower", "until", "passes"),
    [
        ("", "", False),  # the test ends before the absence timer
        ("", "    until: 31m", True),
        (
            "      - {at: 29m, events: [{type: deploy.finished, id: f1, subject: shop/api}]}",
            "    until: 2h",
            False,
        ),
        (
            "      - {at: 1m, events: [{type: deploy.started, id: s1, subject: shop/api}]}",
            "    until: 2h",
            True,
        ),
    ],
)
def test_rule_tests_send_events_and_run_time_past_absence_timers(
    tmp_path: Path, follower: str, until: str, passes: bool
) -> None:
    # The last case resends the first event (the same id): a duplicate changes nothing.
    text = NEVER_FINISHED.replace("FOLLOWER\n", follower + "\n" if follower else "")
    code, output = run_tests(
        tmp_path, text.replace("UNTIL\n", until + "\n" if until else ""), "deploys.yaml"
    )
    assert (code == 0) is passes, output
