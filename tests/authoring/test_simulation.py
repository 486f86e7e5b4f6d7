from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from responder.cli import app
from tests.helpers import FIXTURES


def test_simulate_explains_decisions_and_non_matches(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["simulate", str(FIXTURES / "firing_group_servicedown_3_hosts.json")],
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
