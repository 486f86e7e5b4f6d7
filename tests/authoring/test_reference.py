"""The reference pages in docs/ say what the code says."""

from __future__ import annotations

import pytest

from responder.authoring.reference import PAGES, page
from tests.helpers import ROOT


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_committed_reference_page_is_current(name: str) -> None:
    committed = (ROOT / PAGES[name]).read_text()
    assert committed == page(name), f"run: responder reference {name} > {PAGES[name]}"


def test_every_setting_and_operation_is_on_its_page() -> None:
    from flows.catalog import catalog
    from responder.settings import Settings

    settings = page("settings")
    for field in Settings.model_fields:
        assert f"| `RESPONDER_{field.upper()}` |" in settings
    operations = page("operations")
    for entry in catalog():
        assert f"\n## {entry.name}\n" in operations
    assert "| `timeout_seconds` | number | `10.0` | > 0, ≤ 300 |" in operations
    assert "| `port` | `RESPONDER_PORT` | int | `9470` | ≥ 1, ≤ 65535 |" in settings
