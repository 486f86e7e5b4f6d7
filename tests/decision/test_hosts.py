"""Host identity: one machine, one spelling, whatever the `instance` label looks like."""

from __future__ import annotations

import pytest

from responder.decision.decisions import template_context
from responder.decision.hosts import canonical_host, host_of
from responder.decision.services import ServiceCatalog
from responder.decision.templates import render
from responder.events.webhook import Alert


@pytest.mark.parametrize(
    ("instance", "host"),
    [
        ("mx-1", "mx-1"),
        ("mx-1:9100", "mx-1"),
        ("MX-1", "mx-1"),
        ("Mx-1.Example.COM.:9100", "mx-1.example.com"),
        ("10.0.0.7:9100", "10.0.0.7"),
        ("[::1]:9100", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("[FE80::1]:9100", "fe80::1"),
        ("https://user:pw@Shop.example.com:443/health", "shop.example.com"),
        ("", ""),
    ],
)
def test_a_host_has_one_spelling(instance: str, host: str) -> None:
    assert canonical_host(instance) == host


def alert(**labels: str) -> Alert:
    return Alert.model_validate(
        {
            "status": "firing",
            "labels": {"alertname": "DiskAlmostFull", **labels},
            "startsAt": "2026-11-25T23:17:23.549Z",
            "fingerprint": "4c49c27c50dac262",
        }
    )


def test_templates_see_the_host_from_instance_or_the_label_the_catalog_names() -> None:
    catalog = ServiceCatalog.model_validate(
        {"services": {"db": {"tier": 0, "host_label": "node"}, "web": {"tier": 1}}}
    )
    web = alert(instance="WEB-3:9100", service="web", node="n-9")
    db = alert(instance="db-exporter:9187", service="db", node="N-9")
    mutex = "host:{{ alert.host }}"
    assert render(mutex, template_context(web, {}, catalog=catalog)) == "host:web-3"
    assert render(mutex, template_context(db, {}, catalog=catalog)) == "host:n-9"
    assert render(mutex, template_context(alert(), {})) == "host:"  # one lock for no host
    assert host_of({"node": "N-9:22"}, {"host_label": "node"}) == "n-9"
    assert render("{{ alert.labels.instance | host }}", template_context(web, {})) == "web-3"
