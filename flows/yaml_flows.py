"""The YAML flows of `flows/`, importable by name: `flows.yaml_flows.clean_disk`.

Prefect's runner loads a deployment's flow from its entrypoint in a fresh process; this
module builds the YAML flows there on first access, so they deploy like Python flows.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prefect import Flow


@cache
def flows() -> dict[str, Flow[..., Any]]:
    """Every YAML flow, by the Python name it is importable as."""
    from flows.dsl import load_flow_files
    from flows.interpreter import build_flow, python_name
    from flows.operations import all_operations

    sources = load_flow_files(operations=set(all_operations()))
    return {python_name(name): build_flow(source) for name, source in sources.items()}


def __getattr__(name: str) -> Flow[..., Any]:
    try:
        return flows()[name]
    except KeyError:
        raise AttributeError(f"no YAML flow is importable as {name!r}") from None
