"""Remediation flows run for real: on the test Prefect server, against a local HTTP target."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import load_flow
from flows.remediations import http_call
from flows.secrets import MissingSecret
from responder.authoring.demo import DemoService
from tests.helpers import free_port
from tests.servers import prometheus

pytestmark = pytest.mark.prefect


def test_http_call_sends_secret_headers_from_the_environment(
    prefect_api_url: str, demo_service: DemoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_SECRET_PAGER_TOKEN", "s3cret")
    summary = http_call(
        url=f"{demo_service.url}/page",
        json_body={"summary": "down"},
        headers_from_env={"Authorization": "FLOW_SECRET_PAGER_TOKEN"},
        verify_url=f"{demo_service.url}/health/page",
        verify_within_seconds=5,
    )
    assert "answered 202" in summary
    assert demo_service.posts == [("/page", {"summary": "down"})]
    assert demo_service.headers[0]["Authorization"] == "s3cret"


def test_http_call_fails_before_acting_when_a_secret_is_missing(
    prefect_api_url: str, demo_service: DemoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOW_SECRET_PAGER_TOKEN", raising=False)
    with pytest.raises(MissingSecret, match="FLOW_SECRET_PAGER_TOKEN"):
        http_call(
            url=f"{demo_service.url}/page",
            headers_from_env={"Authorization": "FLOW_SECRET_PAGER_TOKEN"},
        )
    assert demo_service.posts == []


def test_http_call_reads_only_variables_meant_for_flows(
    prefect_api_url: str, demo_service: DemoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.exceptions import ParameterTypeError

    monkeypatch.setenv("RESPONDER_OPERATOR_TOKEN", "operator-secret")
    with pytest.raises(ParameterTypeError, match="FLOW_SECRET_"):
        http_call(
            url=f"{demo_service.url}/page",
            headers_from_env={"Authorization": "RESPONDER_OPERATOR_TOKEN"},
        )
    assert demo_service.posts == []


@pytest.fixture
def disk_host(tmp_path: Path) -> Iterator[tuple[DemoService, str]]:
    """A host agent whose disk is full until cleaned, scraped by a real Prometheus."""
    agent = DemoService(full_disks=("db-1", "db-2", "db-3")).start()
    target = agent.url.removeprefix("http://")
    try:
        with prometheus(tmp_path, free_port(), [target], honor_labels=True) as url:
            yield agent, url
    finally:
        agent.stop()


def test_clean_disk_cleans_then_verifies_in_prometheus(
    prefect_api_url: str, disk_host: tuple[DemoService, str]
) -> None:
    agent, prometheus_url = disk_host
    summary = load_flow("clean-disk")(
        host="db-1", agent_url=agent.url, prometheus_url=prometheus_url
    )
    assert summary == "clean-disk: done (clean, space_back)"
    assert agent.posts == [("/cleanup/db-1", {"mountpoint": "/"})]


def test_clean_disk_fails_when_the_space_does_not_come_back(
    prefect_api_url: str, disk_host: tuple[DemoService, str]
) -> None:
    from flows.operations.prometheus import ConditionNotMet

    agent, prometheus_url = disk_host
    agent.cleanup_frees = False
    with pytest.raises(ConditionNotMet):
        load_flow("clean-disk")(
            host="db-1",
            agent_url=agent.url,
            prometheus_url=prometheus_url,
            verify_within_seconds=8,
        )
    assert [path for path, _ in agent.posts] == ["/cleanup/db-1"]


def test_renew_certificate_runs_certbot_over_ssh_then_verifies_the_probe(
    prefect_api_url: str, tmp_path: Path
) -> None:
    """A real sshd runs a stand-in certbot; a real Prometheus scrapes a stand-in blackbox
    exporter whose certificate expiry moves out once certbot has run."""
    import getpass
    import time as clock

    from tests.servers import QuietHandler, http_server, real_sshd

    renewed = tmp_path / "renewed.json"
    certbot = tmp_path / "certbot"
    certbot.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(renewed)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    certbot.chmod(0o755)

    class Blackbox(QuietHandler):
        def do_GET(self) -> None:
            days = 90 if renewed.exists() else 2
            expiry = int(clock.time()) + days * 86400
            line = (
                f'probe_ssl_earliest_cert_expiry{{instance="https://shop.example.com"}} {expiry}\n'
            )
            self.reply(200, line.encode())

    with (
        real_sshd(tmp_path / "sshd") as sshd,
        http_server(Blackbox) as exporter,
        prometheus(
            tmp_path, free_port(), [exporter.removeprefix("http://")], honor_labels=True
        ) as prometheus_url,
    ):
        summary = load_flow("renew-certificate")(
            host="127.0.0.1",
            cert_name="shop.example.com",
            probe_instance="https://shop.example.com",
            prometheus_url=prometheus_url,
            certbot=str(certbot),
            ssh_user=getpass.getuser(),
            ssh_port=sshd.port,
            identity_file=str(sshd.client_key),
            known_hosts_file=str(sshd.known_hosts),
            verify_within_seconds=30,
        )
    assert summary == "renew-certificate: done (renew, valid_long_enough)"
    assert json.loads(renewed.read_text()) == [
        "renew",
        "--cert-name",
        "shop.example.com",
        "--non-interactive",
    ]


def test_a_secret_can_come_from_a_prefect_secret_block(
    prefect_api_url: str, demo_service: DemoService
) -> None:
    from prefect.blocks.system import Secret

    Secret(value="from-the-block").save("pager-token", overwrite=True)
    http_call(
        url=f"{demo_service.url}/page",
        headers_from_env={"Authorization": "prefect:pager-token"},
    )
    assert demo_service.headers[0]["Authorization"] == "from-the-block"
    with pytest.raises(MissingSecret, match="prefect:no-such-block"):
        http_call(
            url=f"{demo_service.url}/page",
            headers_from_env={"Authorization": "prefect:no-such-block"},
        )
    assert len(demo_service.posts) == 1


FLEET = """
flow: clean-fleet
description: Clean disks two hosts at a time; each batch must show its space back.
parameters:
  hosts: {type: list, items: hostname}
  agent_url: {type: url}
  prometheus_url: {type: url}
steps:
  - name: roll
    batch:
      over: "{{ params.hosts }}"
      size: "2"
      steps:
        - name: clean
          op: http.request
          with: {method: POST, url: "{{ params.agent_url }}/cleanup/{{ host | segment }}"}
      verify:
        prometheus: "{{ params.prometheus_url }}"
        query: >-
          count(node_filesystem_avail_bytes{instance=~"{{ batch | join('|') }}"}
          / node_filesystem_size_bytes > 0.3) == {{ batch | length }}
        within: 20s
        every: 1s
"""


@pytest.mark.parametrize("frees", [True, False], ids=["space-back", "space-not-back"])
def test_a_rollout_verifies_each_batch_in_prometheus_before_the_next(
    frees: bool, prefect_api_url: str, disk_host: tuple[DemoService, str], tmp_path: Path
) -> None:
    from flows.dsl import load_flow_file
    from flows.interpreter import build_flow
    from flows.operations import all_operations
    from flows.operations.prometheus import ConditionNotMet

    agent, prometheus_url = disk_host
    agent.cleanup_frees = frees
    (tmp_path / "fleet.yaml").write_text(FLEET)
    fleet = build_flow(load_flow_file(tmp_path / "fleet.yaml", set(all_operations())))
    hosts = ["db-1", "db-2", "db-3"]
    if frees:
        fleet(hosts=hosts, agent_url=agent.url, prometheus_url=prometheus_url)
        assert sorted(path for path, _ in agent.posts) == [f"/cleanup/{h}" for h in hosts]
    else:
        with pytest.raises(ConditionNotMet):
            fleet(hosts=hosts, agent_url=agent.url, prometheus_url=prometheus_url)
        # The first batch's check failed: the third host was never touched.
        assert sorted(path for path, _ in agent.posts) == ["/cleanup/db-1", "/cleanup/db-2"]
