"""The package's layers: each imports only from the ones below it, and flows/ has one port."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What each layer of `responder` may import from `responder` (besides itself).
BELOW = {
    "events": {"durations", "exceptions"},
    "decision": {"events", "durations", "exceptions", "metrics"},
}
FLOW_PORT = {"responder/orchestration/flow_catalog.py"}


def imported(path: Path) -> set[str]:
    """Every module `path` imports, wherever in the file (local imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(BELOW))
def test_a_layer_imports_only_from_the_layers_below(layer: str) -> None:
    allowed = {layer, *BELOW[layer]}
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "responder" / layer).rglob("*.py")
        for name in imported(path)
        if name.split(".")[0] == "flows"
        or (name.startswith("responder.") and name.split(".")[1] not in allowed)
    }
    assert offenders == set()


def test_responder_reaches_flows_through_its_one_port() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "responder").rglob("*.py")
        if str(path.relative_to(ROOT)) not in FLOW_PORT and "cli" not in path.parts
        for name in imported(path)
        if name.split(".")[0] == "flows"
    }
    assert offenders == set()
