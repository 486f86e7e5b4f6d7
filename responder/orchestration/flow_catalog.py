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
    "reload_flows",
    "share_clients",
    "use_flow_dirs",
]


def parameter_errors(
    flow: str, parameters: dict[str, Any], *, fresh: bool = False
) -> list[dict[str, str]]:
    """What the flow would refuse in these parameters; [] if they fit. With `fresh`, as
    the flow's file is now, keeping what was read of it before (a reload's check).

    Imports the flow, and Prefect with it, on first use.
    """
    from flows.catalog import parameter_errors as check

    return check(flow, parameters, fresh=fresh)


def parameter_fields(flow: str, *, fresh: bool = False) -> dict[str, tuple[bool, str]]:
    """Each parameter the flow takes: whether it is required, and its type as written.

    Imports the flow, and Prefect with it, on first use.
    """
    from flows.catalog import parameters_model

    model = parameters_model.__wrapped__(flow) if fresh else parameters_model(flow)
    return {
        name: (info.is_required(), _type_name(info.annotation))
        for name, info in model.model_fields.items()
    }


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
    """The names of every atomic operation a YAML flow's step may use (imports them)."""
    from flows.operations import all_operations

    return set(all_operations())


def reload_flows() -> None:
    """Forget the flows' parameter models and the catalog: the next check, or the next look
    at the catalog, reads the flow files as they are now.

    Nothing was read if `flows.catalog` was never imported, or is being imported; it is not
    imported for this.
    """
    read = sys.modules.get("flows.catalog")
    # Still being imported (the leader's warm-up does that in a thread): nothing read yet.
    for cached in ("parameters_model", "catalog"):
        function = getattr(read, cached, None)
        if function is not None:
            function.cache_clear()


def share_clients() -> None:
    """Build the HTTP client a process's `http.request` calls share, before a fork server
    forks runs that then inherit it built (`orchestration.warm_runs`)."""
    from flows.operations.http import shared_client

    shared_client()
