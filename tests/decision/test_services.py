from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from responder.decision.services import load_services
from responder.exceptions import CatalogError
from tests.helpers import ROOT


def test_shipped_catalog_loads() -> None:
    catalog = load_services(ROOT / "config" / "services.yaml")
    assert catalog.services["checkout"].tier == 0
    assert catalog.services["checkout"].batch.size == "25%"


def test_missing_file_is_an_empty_catalog(tmp_path: Path) -> None:
    assert load_services(tmp_path / "none.yaml").services == {}


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("services:\n  a: {tier: 12}\n", 2, "less than or equal to 9"),
        ("services:\n  a:\n    tier: 1\n    teir: 2\n", 4, "accepted keys: tier, owner"),
        ("services:\n  a: {tier: 1, batch: {size: 150%}}\n", 2, "should match pattern"),
        (
            "maintenance:\n  - {labels: {}, until: 2026-01-01T00:00:00Z, reason: x}\n",
            2,
            "a window needs match, services or hosts",
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_services(path)
    assert info.value.file == str(path)
    assert info.value.line == line, str(info.value)
    assert needle in str(info.value)


def test_catalog_becomes_facts(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(
        "services:\n  checkout: {tier: 0, owner: payments, approval: true}\n"
        "maintenance:\n"
        "  - {labels: {instance: host-9}, until: 2026-12-01T00:00:00Z, reason: disk swap}\n"
        "  - {labels: {instance: host-8}, until: 2026-01-01T00:00:00Z, reason: long over}\n"
    )
    now = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    facts = load_services(path).facts(now)
    assert [(f.name, dict(f.fields)) for f in facts] == [
        ("service", {"name": "checkout", "tier": "0", "owner": "payments", "approval": "true"}),
        ("maintenance", {"instance": "host-9", "reason": "disk swap"}),
    ]
    assert facts[1].expires_at == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
