"""The Prometheus alerting rules shipped for Responder itself, checked by promtool."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml
from prometheus_client import REGISTRY

import responder.app  # noqa: F401  (registers every metric)
from tests.conftest import ROOT

RULES = ROOT / "config" / "prometheus" / "responder-alerts.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make system-deps` installs Debian's prometheus"
    return subprocess.run(
        [binary, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "responder-alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_only_use_metrics_responder_exports() -> None:
    exported = {
        sample.name.removesuffix("_total")
        for family in REGISTRY.collect()
        for sample in family.samples
    } | {family.name for family in REGISTRY.collect()}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = {
        name.removesuffix("_total")
        for group in groups
        for rule in group["rules"]
        for name in re.findall(r"responder_[a-z_]+", rule["expr"])
    }
    assert used, "the rules use Responder's metrics"
    assert used <= exported, used - exported
