"""Deployments of the remediation flows, each named `<flow>/<flow>`.

Two ways to run them:

- `responder up` serves them all from one local process (`serve_flows`): the embedded default;
- `responder deploy --work-pool POOL` writes a `prefect.yaml` that registers them to a work
  pool (`prefect deploy --all`), so Prefect workers on other machines run them.
"""

from __future__ import annotations

from typing import Any

from flows import REMEDIATIONS, flow_names, load_flow


def serve_flows(limit: int = 5) -> None:
    """Register every flow (Python and YAML) as a deployment and run them until interrupted."""
    from prefect import serve
    from prefect.types.entrypoint import EntrypointType

    deployments = [
        load_flow(name).to_deployment(name=name, entrypoint_type=EntrypointType.MODULE_PATH)
        for name in flow_names()
    ]
    serve(*deployments, limit=limit, print_starting_message=False)


def entrypoint(name: str) -> str:
    """The `path/file.py:function` a worker loads a flow from, relative to the project."""
    if name in REMEDIATIONS:
        module, _, attribute = REMEDIATIONS[name].entry.partition(":")
        return f"{module.replace('.', '/')}.py:{attribute}"
    from flows.interpreter import python_name

    return f"flows/yaml_flows.py:{python_name(name)}"


def prefect_yaml(work_pool: str, work_queue: str | None = None) -> dict[str, Any]:
    """A `prefect.yaml` that deploys every flow to `work_pool`.

    Workers need this project installed (`pip install .`), because YAML flows and operations
    are imported from the `flows` package.
    """
    pool: dict[str, Any] = {"name": work_pool}
    if work_queue:
        pool["work_queue_name"] = work_queue
    return {
        "name": "responder",
        "prefect-version": _prefect_version(),
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}],
        "deployments": [
            {
                "name": name,
                "entrypoint": entrypoint(name),
                "description": (load_flow(name).description or "").strip(),
                "tags": ["responder"],
                "work_pool": dict(pool),
            }
            for name in flow_names()
        ],
    }


def _prefect_version() -> str:
    import prefect

    return str(prefect.__version__)
