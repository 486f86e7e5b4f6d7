"""Deployments of the remediation flows, each named `<flow>/<flow>`.

Two ways to run them:

- `responder up` serves them all from one local process (`serve_flows`): the embedded default;
- `responder deploy --work-pool POOL` writes a `prefect.yaml` that registers them to a work
  pool (`prefect deploy --all`), so Prefect workers on other machines run them.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from responder.orchestration.flow_catalog import (
    REMEDIATIONS,
    flow_names,
    load_flow,
    python_flows,
)


class AtCapacityOncePerMinute(logging.Filter):
    """Prefect's runner says "N scheduled runs skipped (at capacity)" on every poll (each
    second here) while runs wait for a slot; once a minute says it as well."""

    MESSAGE = "%d scheduled runs skipped (at capacity)"

    def __init__(self, every_seconds: float = 60.0) -> None:
        super().__init__()
        self._every = every_seconds
        self._last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = time.monotonic()
        if now - self._last < self._every:
            return False
        self._last = now
        return True


def serve_flows(limit: int = 5) -> None:
    """Register every flow (Python and YAML) as a deployment and run them until interrupted."""
    from prefect import serve
    from prefect.types.entrypoint import EntrypointType

    logging.getLogger("prefect.runner").addFilter(AtCapacityOncePerMinute())

    # A flow of a `flows_dir` directory is no module of an installed package: its file.
    outside = python_flows()
    deployments = [
        load_flow(name).to_deployment(
            name=name,
            entrypoint_type=EntrypointType.FILE_PATH
            if name in outside
            else EntrypointType.MODULE_PATH,
        )
        for name in flow_names()
    ]
    serve(*deployments, limit=limit, print_starting_message=False)


def entrypoint(name: str) -> str:
    """The `path/file.py:function` a worker loads a flow from, relative to the project."""
    if name in REMEDIATIONS:
        module, _, attribute = REMEDIATIONS[name].entry.partition(":")
        return f"{module.replace('.', '/')}.py:{attribute}"
    outside = python_flows().get(name)
    if outside is not None:  # a `flows_dir` file: where it is
        return f"{outside[0]}:{outside[1]}"
    from responder.orchestration.flow_catalog import python_name

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
