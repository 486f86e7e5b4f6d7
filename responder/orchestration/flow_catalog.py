"""The port to `flows/`: the one module of `responder` (the CLI aside) that imports it.

What the rest of Responder asks of the flows: their names (to check rules), the parameters
each accepts (to refuse a decision before the guard), the catalog of operations and flows
(the API, the reference pages), and the flow objects to deploy. Behind this port, `flows`
may import Prefect, so everything that would is imported on first use: checking rules and
deciding must not pay for it.

Flow files can change while Responder runs. `reload_flows` forgets what was read of them
(the parameter models and the catalog); the engine loop calls it on every reload.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from flows import REMEDIATIONS, PythonFlow, flow_names, load_flow

if TYPE_CHECKING:
    from flows.catalog import CatalogEntry
    from flows.dsl import FlowSource
    from flows.parameters import Models

__all__ = [
    "REMEDIATIONS",
    "PythonFlow",
    "catalog",
    "find",
    "flow_dirs_environment",
    "flow_names",
    "load_flow",
    "load_flow_files",
    "operation_names",
    "parameter_errors",
    "parameter_fields",
    "python_flows",
    "python_name",
    "read_anew",
    "reload_flows",
    "share_clients",
    "use_flow_dirs",
]


def parameter_errors(
    flow: str, parameters: dict[str, Any], *, models: Models | None = None
) -> list[dict[str, str]]:
    """What the flow would refuse in these parameters; [] if they fit. `models`: the flows
    as `read_anew()` read them (a reload's check), instead of those in force.

    Reads the flow's file on first use; imports it (and Prefect) only if its source does
    not tell (`flows.signatures`).
    """
    from flows.parameters import parameter_errors as check
    from flows.parameters import parameters_model

    return check(flow, parameters, models=models or parameters_model)


def parameter_fields(flow: str, *, models: Models | None = None) -> dict[str, tuple[bool, str]]:
    """Each parameter the flow takes: whether it is required, and its type as written.

    Read as `parameter_errors` reads it.
    """
    from flows.parameters import parameters_model

    model = (models or parameters_model)(flow)
    return {
        name: (info.is_required(), _type_name(info.annotation))
        for name, info in model.model_fields.items()
    }


def read_anew() -> Models:
    """The flows' parameter models as their files are now, each read once, keeping those in
    force: what one check sees (`parameter_errors(..., models=read_anew())`)."""
    from flows.parameters import read_anew as models

    return models()


def _type_name(annotation: Any) -> str:
    """A parameter's type as a person writes it: `list[str]`, `int | None`, `'GET' | 'POST'`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    name = getattr(origin or annotation, "__name__", None) or str(annotation)
    name = name.replace("typing.", "")
    return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name


def catalog() -> list[CatalogEntry]:
    """Every operation and flow, with what it does, takes and risks (imports every flow)."""
    from flows.catalog import catalog as entries

    return entries()


def find(name: str) -> CatalogEntry | None:
    """One operation or flow of the catalog by name."""
    from flows.catalog import find as entry

    return entry(name)


def python_name(flow: str) -> str:
    """The name a YAML flow is importable as, from `flows.yaml_flows`."""
    from flows.interpreter import python_name as name

    return name(flow)


def load_flow_files(
    directory: Path | None = None, operations: set[str] | None = None
) -> dict[str, FlowSource]:
    """Every YAML flow of `directory` (default: every flow directory) by name, validated."""
    from flows.dsl import load_flow_files as load

    return load(directory, operations)


def python_flows() -> dict[str, tuple[Path, str]]:
    """The Python flows of the `flows_dir` directories by name: file and function."""
    from flows.sources import python_flows as found

    return found()


def flow_dirs_environment(directories: list[Path]) -> dict[str, str]:
    """The environment variables that give a flow runner these flow directories."""
    from flows.sources import environment

    return environment(directories)


def use_flow_dirs(directories: list[Path]) -> None:
    """Take flows from these directories too (the `flows_dir` setting)."""
    from flows.sources import use_dirs

    use_dirs(directories)


def operation_names() -> set[str]:
    """The names of every atomic operation a YAML flow's step may use (read, not imported)."""
    from flows.sources import operation_names as names

    return names()


def reload_flows() -> None:
    """Forget the flows' parameter models and the catalog: the next check, or the next look
    at the catalog, reads the flow files as they are now.

    Nothing was read if `flows.parameters` or `flows.catalog` was never imported, or is
    being imported; neither is imported for this.
    """
    # A module still being imported (in another thread, say) has read nothing yet.
    forget = getattr(sys.modules.get("flows.parameters"), "forget", None)
    if forget is not None:
        forget()
    catalog = getattr(sys.modules.get("flows.catalog"), "catalog", None)
    if catalog is not None:
        catalog.cache_clear()


def share_clients() -> None:
    """Build the HTTP client a process's `http.request` calls share, before a fork server
    forks runs that then inherit it built (`orchestration.warm_runs`)."""
    from flows.operations.http import shared_client

    shared_client()
