"""The floor plan of `responder/` (docs/architecture.md), checked on the source itself.

- Each package is a stage of the pipeline with a rank; a module imports only its own stage and
  lower ranks. `flows/` is reached through the orchestration port alone (the CLI aside).
- No import cycle among modules (imports at module level, as Python runs them).
- No two classes share a name, so that a name in a traceback or a review means one thing.
- No module over 600 lines (the store's over 400), no function over 60 (tests and migrations
  aside).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

# Lower ranks never import higher ones. Top-level modules of `responder/` are the base.
RANKS = {
    "base": 0,
    "events": 1,
    "storage": 2,
    "decision": 3,
    "control": 4,
    "orchestration": 5,
    "runtime": 6,
    "intake": 7,
    "authoring": 8,
    "cli": 9,
}
PORT = "responder.orchestration.flow_catalog"  # the one module of responder/ importing flows/
# Imports that cross the ranks on purpose, each with its reason.
ALLOWED = {
    # Settings validate credentials with their one definition (which endpoint needs what).
    ("responder.settings", "responder.intake.auth"),
}
MODULE_LINES = 600
STORAGE_LINES = 400
FUNCTION_LINES = 60


def sources() -> Iterator[tuple[str, Path]]:
    for package in ("responder", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def stage(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "flows":
        return "flows"
    if len(parts) == 1 or parts[1] in ("__main__",):
        return "cli"
    if parts[1] in RANKS:
        return parts[1]
    # A top-level module (`responder/settings.py`) or package (`responder/cli/`).
    return "cli" if parts[1] == "cli" else "base"


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(tree: ast.Module, *, module_level: bool) -> set[str]:
    """The modules of this repository that `tree` imports (`from responder import x` counts
    as `responder.x`). With `module_level`, only what runs at import time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level and (
                isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) or _type_checking(child)
            ):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # `from a.b import c` names module `a.b.c` or a name in module `a.b`.
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            visit(child)

    visit(tree)
    return {name for name in found if name.split(".")[0] in ("responder", "flows")}


def known(name: str, modules: set[str]) -> str | None:
    """The module `name` refers to (`responder.x.y` may name `y` in module `responder.x`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


MODULES = dict(sources())


def test_no_module_imports_a_later_stage_or_flows_except_through_the_port() -> None:
    faults = []
    for module, path in MODULES.items():
        here = stage(module)
        if here == "flows":
            continue
        for name in imported(ast.parse(path.read_text()), module_level=False):
            target = known(name, set(MODULES))
            if target is None or (module, target) in ALLOWED:
                continue
            there = stage(target)
            if there == "flows":
                if module != PORT and here != "cli":
                    faults.append(f"{module} imports {target}: flows/ only through {PORT}")
            elif RANKS[there] > RANKS[here]:
                faults.append(f"{module} ({here}) imports {target} ({there})")
    assert faults == []


def test_no_import_cycle() -> None:
    graph = {
        module: {
            target
            for name in imported(ast.parse(path.read_text()), module_level=True)
            if (target := known(name, set(MODULES))) is not None and target != module
        }
        for module, path in MODULES.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_no_two_classes_share_a_name() -> None:
    where: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(module)
    assert {name: modules for name, modules in where.items() if len(modules) > 1} == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    path = MODULES[module]
    text = path.read_text()
    limit = STORAGE_LINES if stage(module) == "storage" else MODULE_LINES
    lines = len(text.splitlines())
    assert lines <= limit, f"{path.relative_to(ROOT)}: {lines} lines, over {limit}"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > FUNCTION_LINES
    ]
    assert long == []


def test_the_checks_see_what_they_check() -> None:
    """The walk finds the packages, and a later-stage import would be caught."""
    assert {stage(m) for m in MODULES} >= set(RANKS) - {"base"} | {"flows"}
    tree = ast.parse("from responder.runtime import loop\nfrom responder import metrics\n")
    names = imported(tree, module_level=True)
    assert names == {"responder.runtime.loop", "responder.metrics"}
    assert {known(name, set(MODULES)) for name in names} == names
    assert RANKS[stage("responder.runtime.loop")] > RANKS[stage("responder.decision.engine")]
