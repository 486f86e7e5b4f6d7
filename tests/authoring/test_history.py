"""A replay's history from a real Prometheus: the ALERTS series its alerting rules wrote,
rebuilt into the webhooks Alertmanager would have sent, and replayed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from responder.authoring.history import from_prometheus
from responder.authoring.replay import replay_both, report
from responder.authoring.sandbox import fingerprint_of
from responder.decision.rules import load_rules
from responder.decision.services import load_services
from responder.exceptions import PayloadError
from responder.runtime.service import known_flows
from tests.helpers import ROOT, free_port
from tests.servers import QuietHandler, http_server, prometheus

pytestmark = pytest.mark.alertmanager  # the real-server tests (a Prometheus binary)

ALERTING_RULES = """
groups:
  - name: demo
    rules:
      - alert: ServiceDown
        expr: demo_service_up == 0
        for: 2s
        labels: {severity: critical}
"""
RESTART = """
rules:
  - name: restart
    match: ['alertname="ServiceDown"', 'severity=~"{severity}"']
    run:
      flow: http-call
      parameters: {{url: "http://ctl/restart/{{{{ alert.labels.instance }}}}"}}
    guard: {{key: "restart/{{{{ alert.labels.instance }}}}"}}
"""
LABELS = {
    "alertname": "ServiceDown",
    "instance": "host-1",
    "job": "demo",
    "service": "checkout",
    "severity": "critical",
}


@dataclass
class Target:
    """A scrape target whose service is up or down, as we say."""

    up: int = 1


@pytest.fixture
def target() -> Target:
    return Target()


@pytest.fixture
def prometheus_url(target: Target, tmp_path: Path) -> Iterator[str]:
    class Metrics(QuietHandler):
        def do_GET(self) -> None:
            text = f'demo_service_up{{instance="host-1",service="checkout"}} {target.up}\n'
            self.reply(200, text.encode(), "text/plain; version=0.0.4")

    with http_server(Metrics) as url:
        address = url.removeprefix("http://")
        with prometheus(
            tmp_path, free_port(), [address], honor_labels=True, alerting_rules=ALERTING_RULES
        ) as found:
            yield found


def until(url: str, query: str, wanted: int, timeout: float = 60) -> None:
    """Wait until `query` answers `wanted` series."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/api/v1/query", params={"query": query}).json()
        if len(answer["data"]["result"]) == wanted:
            return
        time.sleep(0.2)
    pytest.fail(f"{query} did not answer {wanted} series within {timeout}s")


async def test_alerts_that_fired_and_resolved_in_prometheus_replay_exactly(
    target: Target, prometheus_url: str, tmp_path: Path
) -> None:
    until(prometheus_url, "demo_service_up == 1", 1)
    start = float(int(time.time()))
    target.up = 0  # broken: the alert is pending for 2s, then fires
    until(prometheus_url, 'ALERTS{alertstate="firing"}', 1)
    time.sleep(2)
    target.up = 1  # fixed: it resolves
    until(prometheus_url, "ALERTS", 0)
    time.sleep(2)
    end = float(int(time.time()) + 1)

    history = from_prometheus(prometheus_url, start, end, 1.0)

    bodies = [json.loads(d.body) for d in history.deliveries]
    assert [[(a["status"], a["labels"]) for a in b["alerts"]] for b in bodies] == [
        [("firing", LABELS)],
        [("resolved", LABELS)],
    ]
    fired, resolved = history.deliveries
    started = bodies[0]["alerts"][0]["startsAt"]
    # It was pending from when it started (after `start`), and fired 2s (`for`) later.
    pending = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    assert start < pending
    assert 2 <= fired.at - pending <= 4
    assert 2 <= resolved.at - fired.at <= 10
    assert bodies[1]["alerts"][0]["startsAt"] == started

    (tmp_path / "current").mkdir()
    (tmp_path / "proposed").mkdir()
    (tmp_path / "current" / "r.yaml").write_text(RESTART.format(severity="critical|page"))
    (tmp_path / "proposed" / "r.yaml").write_text(RESTART.format(severity="page"))
    comparison = await replay_both(
        history,
        load_rules([tmp_path / "current"], known_flows()),
        load_rules([tmp_path / "proposed"], known_flows()),
        load_services(ROOT / "config" / "services.yaml"),
        {},
    )
    document, _ = report(comparison, history, [])

    incident = f"{fingerprint_of(LABELS)}@{started.replace('Z', '+00:00')}"
    assert document["changes"] == [
        {
            "change": "lost-remediation",
            "kind": "remediation",
            "rule": "restart",
            "flow": "http-call",
            "key": "restart:restart/host-1",
            "incident": incident,
            "alertname": "ServiceDown",
            "service": "checkout",
            "tier": "0",
            "refusal": "",
            "current": 1,
            "proposed": 0,
        }
    ]


def test_a_prometheus_that_does_not_answer_is_a_clear_error() -> None:
    with pytest.raises(
        PayloadError, match=r"--prometheus http://127\.0\.0\.1:\d+: cannot query ALERTS"
    ):
        from_prometheus(f"http://127.0.0.1:{free_port()}", 0, 60, 15)
    with pytest.raises(PayloadError, match="needs --start before --end"):
        from_prometheus("http://127.0.0.1:1", 60, 0, 15)


def test_an_answer_that_is_not_a_matrix_is_a_clear_error() -> None:
    """A server that answers 200 with JSON that is not Prometheus's matrix (a stand-in
    over real HTTP: a real Prometheus never answers so)."""

    class NotPrometheus(QuietHandler):
        def do_GET(self) -> None:
            body = b'{"status": "success", "data": {"result": [{"metric": 1}]}}'
            self.reply(200, body, "application/json")

    with (
        http_server(NotPrometheus) as url,
        pytest.raises(PayloadError, match="not a matrix of series"),
    ):
        from_prometheus(url, 0, 60, 15)
