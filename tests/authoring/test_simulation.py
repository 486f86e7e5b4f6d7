from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from responder.cli import app
from tests.helpers import FIXTURES


def test_simulate_explains_decisions_and_non_matches(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            str(FIXTURES / "firing_group_servicedown_3_hosts.json"),
            "--at",
            "2026-11-25T23:17:30Z",  # a second after the newest alert started
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "restart-crashed-service → admitted" in out
    assert "service-outage → asserted: asserted service-outage{service=checkout}" in out
    assert (
        "page-service-outage → refused: key 'page-service-outage:page/outage/checkout' is active"
        in out
    )
    assert "page-still-down: firing_for: fired 0s of 900s" in out
    assert 'clean-full-disk: alertname="DiskAlmostFull" does not hold' in out


def test_simulate_rejects_a_non_webhook(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"version": "4"}')
    result = CliRunner().invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 1
    assert "not an Alertmanager webhook" in result.output
    assert "groupKey: Field required" in result.output


def test_a_day_old_alert_is_judged_as_of_now() -> None:
    """By default the clock is now: the captured alert has been down for days, so the rule
    that pages after 15 minutes holds; at its start it did not."""
    fixture = str(FIXTURES / "firing_single_servicedown.json")
    now = CliRunner().invoke(app, ["simulate", fixture], catch_exceptions=False)
    then = CliRunner().invoke(
        app, ["simulate", fixture, "--at", "2026-11-25T23:17:24Z"], catch_exceptions=False
    )

    assert now.exit_code == then.exit_code == 0, now.output + then.output
    assert "page-still-down → admitted" in now.output
    assert "page-still-down: firing_for: fired 0s of 900s" in then.output
    assert "page-still-down → admitted" not in then.output
    assert "flow runs: 2" in now.output
    assert "flow runs: 1" in then.output


def test_a_bad_at_names_what_is_accepted() -> None:
    fixture = str(FIXTURES / "firing_single_servicedown.json")
    result = CliRunner().invoke(app, ["simulate", fixture, "--at", "tomorrow"])
    assert result.exit_code == 1
    assert "--at 'tomorrow': accepted: an RFC 3339 time" in result.output


def test_a_batch_shows_as_one_run_with_its_members(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "batched.yaml").write_text(
        """
rules:
  - name: restart-batch
    match: ['alertname="ServiceDown"', 'instance!=""']
    run:
      flow: restart-in-batches
      parameters:
        service: "{{ alert.labels.service }}"
        hosts: ["{{ alert.labels.instance }}"]
        control_url: http://ctl
      batch: {window: 30s, over: hosts}
    guard: {key: "restart/{{ alert.labels.instance }}"}
"""
    )
    config = tmp_path / "responder.yaml"
    config.write_text(f"rules_dir: {tmp_path / 'rules'}\n")
    result = CliRunner().invoke(
        app,
        ["simulate", str(FIXTURES / "firing_group_servicedown_3_hosts.json"), "-c", str(config)],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    assert result.output.count("restart-batch → admitted") == 3
    runs = result.output[result.output.index("flow runs:") :].splitlines()
    assert runs == [
        "flow runs: 1",
        '  restart-in-batches {"service": "checkout", "hosts": ["host-1", "host-2", "host-3"], '
        '"control_url": "http://ctl"}',
        "      batch of 3: restart-batch:restart/host-1, restart-batch:restart/host-2, "
        "restart-batch:restart/host-3",
    ]
