"""The catalog: every atomic operation and flow, with what it does, takes and risks.

`GET /api/v1/catalog` and `responder catalog` show it, so platform engineers, operations
experts and SREs all see the same list of what Responder can do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

from flows import REMEDIATIONS, load_flow
from flows.operations import all_operations
from flows.operations.approval import ApprovalInput
from flows.sources import PACKAGE_DIR, python_flows

Kind = Literal["operation", "flow"]


@dataclass(frozen=True)
class CatalogEntry:
    """One thing Responder can do."""

    name: str
    kind: Kind
    description: str
    risk: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]  # JSON Schema
    source: str  # where it is defined

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "risk": self.risk,
            "tags": list(self.tags),
            "source": self.source,
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "parameters": self.parameters}


APPROVAL = CatalogEntry(
    name="approval",
    kind="operation",
    description=(
        "Pause the flow run until a person approves or rejects it in the Prefect UI "
        "(typed input: approved, approver, comment), with a timeout. A YAML flow step "
        "`approval: {message, timeout}`; a rejection ends the run Cancelled."
    ),
    risk="read",
    tags=("control",),
    parameters=ApprovalInput.model_json_schema(),
    source="flows.operations.approval",
)


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n", 1)[0].split())


@functools.cache
def catalog() -> list[CatalogEntry]:
    """Every operation and flow, operations first, each group by name (built once: it
    imports every flow)."""
    from prefect.utilities.callables import parameter_schema

    from flows.dsl import load_flow_files

    entries = [
        CatalogEntry(
            name=op.name,
            kind="operation",
            description=op.description,
            risk=op.risk,
            tags=op.tags,
            parameters=op.parameters.model_json_schema(),
            source=op.task.fn.__module__,
        )
        for op in all_operations().values()
    ]
    entries.append(APPROVAL)
    entries.sort(key=lambda e: e.name)
    yaml_flows = load_flow_files(operations=set(all_operations()))
    python = {name: (p.risk, p.tags, p.entry) for name, p in REMEDIATIONS.items()}
    for name, (path, function) in python_flows().items():  # a `flows_dir`'s
        python[name] = ("medium", (), f"{path}:{function}")
    flows: list[CatalogEntry] = []
    for name, (risk, tags, entry) in python.items():
        fn = load_flow(name).fn
        schema = parameter_schema(fn).model_dump_for_openapi()
        flows.append(
            CatalogEntry(name, "flow", _first_paragraph(fn.__doc__), risk, tags, schema, entry)
        )
    for name, source in yaml_flows.items():
        spec = source.spec
        flows.append(
            CatalogEntry(
                name,
                "flow",
                " ".join(spec.description.split()),
                spec.risk,
                tuple(spec.tags),
                spec.parameters_model.model_json_schema(),
                f"flows/{source.file.name}"
                if source.file.parent == PACKAGE_DIR
                else str(source.file),
            )
        )
    return entries + sorted(flows, key=lambda e: e.name)


def find(name: str) -> CatalogEntry | None:
    """One entry by name (an operation and a flow never share a name: flows have no dots)."""
    return next((entry for entry in catalog() if entry.name == name), None)
