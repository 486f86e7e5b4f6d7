"""`responder test`: the shipped rule library passes its own tests, and failures are readable."""

from __future__ import annotations

import shutil
from pathlib import Path

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
