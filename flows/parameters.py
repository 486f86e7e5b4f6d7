"""What a flow accepts: a model of its parameters, to refuse a decision before the guard.

Read without importing Prefect wherever the flow's file tells it: a YAML flow's from its
file (`flows.dsl`), a Python flow's from its source (`flows.signatures`). A Python flow whose
source cannot tell is imported, and its signature read (Prefect is imported with it).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from flows import REMEDIATIONS, load_flow
from flows.signatures import read_parameters
from flows.sources import python_flows

if TYPE_CHECKING:
    from flows.dsl import FlowSource

# Each flow's parameter model by name: `parameters_model`, or `read_anew()`'s.
Models = Callable[[str], type[BaseModel]]


@functools.cache
def parameters_model(flow_name: str) -> type[BaseModel]:
    """A model of the flow's parameters, as Prefect validates them when a run starts.

    A YAML flow's signature is built from its file's parameter model, so that model is used
    as it is (without building the flow, which imports every operation). A Python flow's is
    built from its signature.
    """
    return _model(flow_name, _yaml_flow)


@functools.cache
def _yaml_flows() -> dict[str, FlowSource]:
    """The YAML flows, read once for all of them (`forget` forgets them)."""
    from flows.dsl import load_flow_files

    return load_flow_files()


def _yaml_flow(flow_name: str) -> FlowSource:
    if flow_name not in _yaml_flows():  # new since they were read (another flows_dir?)
        _yaml_flows.cache_clear()
    return _yaml_flows()[flow_name]


def forget() -> None:
    """Forget what was read of the flow files: the next check reads them as they are now."""
    parameters_model.cache_clear()
    _yaml_flows.cache_clear()


def _model(flow_name: str, yaml_flow: Callable[[str], FlowSource]) -> type[BaseModel]:
    source = python_source(flow_name)
    if source is None:
        return yaml_flow(flow_name).spec.parameters_model
    fields: dict[str, Any] | None = read_parameters(*source)
    if fields is None:
        fields = imported_parameters(flow_name)
    model: type[BaseModel] = create_model(
        f"{flow_name}-parameters", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def python_source(flow_name: str) -> tuple[Path, str] | None:
    """The file and function of a Python flow; None for a YAML flow."""
    if flow_name in REMEDIATIONS:
        module_name, _, function = REMEDIATIONS[flow_name].entry.partition(":")
        spec = importlib.util.find_spec(module_name)
        assert spec is not None and spec.origin is not None  # the package's own module
        return Path(spec.origin), function
    return python_flows().get(flow_name)


def imported_parameters(flow_name: str) -> dict[str, tuple[Any, Any]]:
    """Each parameter of a Python flow, from its imported signature: type and default."""
    function = load_flow(flow_name).fn
    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    return fields


def read_anew() -> Models:
    """The flows' models as their files are now, each read once, keeping what was read
    before: what one check (a reload's) sees, while the flows in force stay until it passes."""
    yaml_flows = functools.cache(_yaml_flows.__wrapped__)
    return functools.cache(lambda flow_name: _model(flow_name, lambda n: yaml_flows()[n]))


def parameter_errors(
    flow_name: str, parameters: dict[str, Any], *, models: Models = parameters_model
) -> list[dict[str, str]]:
    """Why `parameters` would be refused when the run starts; empty when they fit.

    Rule decisions and manual runs are checked with this before the guard, so a label that
    is not a hostname (or carries shell syntax) is refused before anything is admitted.
    `models` gives the flow's model (`read_anew()`'s, for a reload's check).
    """
    try:
        models(flow_name).model_validate(parameters)
    except ValidationError as exc:
        return [
            {"field": ".".join(str(p) for p in err["loc"]) or "(parameters)", "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
    return []
