"""The catalog: every atomic operation and flow, with what it does, takes and risks.

`GET /api/v1/catalog` and `responder catalog` show it, so platform engineers, operations
experts and SREs all see the same list of what Responder can do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from flows import REMEDIATIONS, load_flow
from flows.operations import all_operations
from flows.operations.approval import ApprovalInput

Kind = Literal["operation", "flow"]


@dataclass(frozen=True)
class Entry:
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


APPROVAL = Entry(
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


def catalog() -> list[Entry]:
    """Every operation and flow, operations first, each group by name."""
    from prefect.utilities.callables import parameter_schema

    from flows.dsl import load_flow_files

    entries = [
        Entry(
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
    flows: list[Entry] = []
    for name, python in REMEDIATIONS.items():
        fn = load_flow(name).fn
        flows.append(
            Entry(
                name,
                "flow",
                _first_paragraph(fn.__doc__),
                python.risk,
                python.tags,
                parameter_schema(fn).model_dump_for_openapi(),
                python.entry,
            )
        )
    for name, source in yaml_flows.items():
        spec = source.spec
        flows.append(
            Entry(
                name,
                "flow",
                " ".join(spec.description.split()),
                spec.risk,
                tuple(spec.tags),
                spec.parameters_model.model_json_schema(),
                f"flows/{source.file.name}",
            )
        )
    return entries + sorted(flows, key=lambda e: e.name)


def find(name: str) -> Entry | None:
    """One entry by name (an operation and a flow never share a name: flows have no dots)."""
    return next((entry for entry in catalog() if entry.name == name), None)


def parameter_errors(flow_name: str, parameters: dict[str, Any]) -> list[dict[str, str]]:
    """Why `parameters` would be refused by the flow's own validation; empty when they fit.

    This is the check Prefect makes when the run starts, made before anything is admitted.
    """
    import inspect

    from prefect.exceptions import ParameterBindError, ParameterTypeError

    flow = load_flow(flow_name)
    accepted = list(inspect.signature(flow.fn).parameters)
    unknown = [name for name in parameters if name not in accepted]
    if unknown:
        return [
            {"field": name, "message": f"unknown parameter; accepted: {', '.join(accepted)}"}
            for name in unknown
        ]
    try:
        flow.validate_parameters(parameters)
    except ParameterTypeError as exc:
        errors = []
        for line in str(exc).splitlines():
            if line.startswith(" - "):
                field, _, message = line[3:].partition(": ")
                errors.append({"field": field or "(parameters)", "message": message})
        return errors or [{"field": "(parameters)", "message": str(exc)}]
    except ParameterBindError as exc:
        return [{"field": "(parameters)", "message": str(exc)}]
    return []
