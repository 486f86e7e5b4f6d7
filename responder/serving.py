"""Serving remediation flows as Prefect deployments, each named `<flow>/<flow>`."""

from __future__ import annotations

import importlib
from typing import Any

from flows import REMEDIATIONS


def load_flow(name: str) -> Any:
    """Import the Prefect flow object a remediation name refers to."""
    module_name, _, attribute = REMEDIATIONS[name].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def serve_flows(limit: int = 5) -> None:
    """Register every remediation as a deployment and run them until interrupted."""
    from prefect import serve

    deployments = [load_flow(name).to_deployment(name=name) for name in sorted(REMEDIATIONS)]
    serve(*deployments, limit=limit, print_starting_message=False)
