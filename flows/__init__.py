"""Remediation flows, the atomic operations they are built from, and YAML flows.

`REMEDIATIONS` names every Python flow of this package a rule may run, as `module:attribute`;
YAML flows are the `*.yaml` files of this directory (see `flows.dsl`); the directories of the
`flows_dir` setting add YAML and Python flows (`flows.sources`). `flow_names()` lists both without
importing Prefect, so rule checking stays fast; `load_flow()` imports one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class PythonFlow:
    """Where a Python remediation lives, and what the catalog says of it."""

    entry: str  # module:attribute
    risk: Literal["read", "low", "medium", "high"]
    tags: tuple[str, ...] = ()


REMEDIATIONS: dict[str, PythonFlow] = {
    "restart-service": PythonFlow("flows.remediations:restart_service", "medium", ("service",)),
    "http-call": PythonFlow("flows.remediations:http_call", "medium", ("http",)),
}


def flow_names() -> list[str]:
    """Every flow a rule may run: the Python remediations and the YAML flows, this
    package's and those of the `flows_dir` directories (`flows.sources`)."""
    from flows.dsl import yaml_flow_names
    from flows.sources import python_flows

    return sorted({*REMEDIATIONS, *yaml_flow_names(), *python_flows()})


def load_flow(name: str) -> Any:
    """The Prefect flow object a flow name refers to."""
    if name in REMEDIATIONS:
        module_name, _, attribute = REMEDIATIONS[name].entry.partition(":")
        return getattr(importlib.import_module(module_name), attribute)
    from flows.sources import load_python_flow, python_flows

    outside = python_flows().get(name)
    if outside is not None:
        return load_python_flow(*outside)
    from flows.interpreter import python_name
    from flows.yaml_flows import flows

    try:
        return flows()[python_name(name)]
    except KeyError:
        raise KeyError(f"unknown flow {name!r}; known: {', '.join(flow_names())}") from None


__all__ = ["REMEDIATIONS", "PythonFlow", "flow_names", "load_flow"]
