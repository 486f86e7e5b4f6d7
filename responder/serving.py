"""Serving remediation flows as Prefect deployments, each named `<flow>/<flow>`."""

from __future__ import annotations

from flows import flow_names, load_flow


def serve_flows(limit: int = 5) -> None:
    """Register every flow (Python and YAML) as a deployment and run them until interrupted."""
    from prefect import serve
    from prefect.types.entrypoint import EntrypointType

    deployments = [
        load_flow(name).to_deployment(name=name, entrypoint_type=EntrypointType.MODULE_PATH)
        for name in flow_names()
    ]
    serve(*deployments, limit=limit, print_starting_message=False)
