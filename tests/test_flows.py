"""Remediation flows run for real: on the test Prefect server, against a local HTTP target."""

from __future__ import annotations

import pytest

from flows.remediations import http_call
from flows.secrets import MissingSecret
from responder.demo import DemoService

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
