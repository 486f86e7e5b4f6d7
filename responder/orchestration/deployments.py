"""Deployments of the remediation flows, each named `<flow>/<flow>`.

Two ways to run them:

- `responder up` serves them all from one local process (`serve_flows`): the embedded default;
- `responder deploy --work-pool POOL` writes a `prefect.yaml` that registers them to a work
  pool (`prefect deploy --all`), so Prefect workers on other machines run them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import multiprocessing.context
import time
from typing import Any

from responder.orchestration.flow_catalog import (
    REMEDIATIONS,
    flow_names,
    load_flow,
    python_flows,
)

# Seconds between the embedded runner's looks for scheduled runs: half of it, on average, is
# added to the time from a decision to the flow's first call.
POLL_SECONDS = 0.25


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


class _WarmProcesses:
    """What `prefect.flow_engine` sees as `multiprocessing`: whatever start method it asks
    for, it gets the fork server, whose processes start with Prefect and the flows imported."""

    context = multiprocessing.context

    def __init__(self, forkserver: multiprocessing.context.BaseContext) -> None:
        self._forkserver = forkserver

    def get_context(self, method: str | None = None) -> multiprocessing.context.BaseContext:
        return self._forkserver


def start_flow_runs_warm(flow_modules: list[str]) -> None:
    """Start each flow run of this process's runner in a process forked from a warm one.

    Prefect's runner starts each run in a fresh interpreter (`multiprocessing`'s *spawn*)
    that imports Prefect and the flow: 2 to 6 s of CPU each here, most of the time from a
    decision to the flow's first call, and runs queue behind each other on a small machine.
    Here a fork server imports them once, at start, and each run is a fork of it: still one
    process per run, which the runner watches, cancels and kills as before. Prefect asks
    `multiprocessing` for its context in `run_flow_in_subprocess`; the runner's own flows
    (`Runner.add_flow`) are started through it. The fork server also imports `warm_runs`,
    which readies what each run would otherwise set up for itself.
    """
    import multiprocessing.forkserver

    import prefect.flow_engine

    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(
        ["prefect.flow_engine", *flow_modules, "responder.orchestration.warm_runs"]
    )
    multiprocessing.forkserver.ensure_running()
    prefect.flow_engine.multiprocessing = _WarmProcesses(forkserver)  # type: ignore[attr-defined,assignment]


def serve_flows(limit: int = 5, poll_seconds: float = POLL_SECONDS) -> None:
    """Register every flow (Python and YAML) as a deployment and run them until interrupted.

    The flows are added to the runner as objects (not only as deployments), so it runs them
    from memory, in warm processes (`start_flow_runs_warm`), instead of importing them anew
    in a fresh interpreter for each run.
    """
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner
    from prefect.types.entrypoint import EntrypointType

    logging.getLogger("prefect.runner").addFilter(AtCapacityOncePerMinute())

    # A flow of a `flows_dir` directory is no module of an installed package: its file.
    outside = python_flows()
    flows = {name: load_flow(name) for name in flow_names()}
    start_flow_runs_warm(sorted({f.fn.__module__ for n, f in flows.items() if n not in outside}))
    runner = Runner(limit=limit, query_seconds=poll_seconds, pause_on_shutdown=True)
    for name, flow in flows.items():
        kind = EntrypointType.FILE_PATH if name in outside else EntrypointType.MODULE_PATH
        runner.add_flow(flow, name=name, entrypoint_type=kind)
    with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
        asyncio.run(runner.start())


def entrypoint(name: str) -> str:
    """The module path a worker imports a flow from: `flows.remediations.restart_service`.

    A module path, not a file path: a process worker runs each flow run in a directory of
    its own (a temporary one unless its pool says otherwise), where `flows/...py` is not;
    the project installed on the worker (or on its PYTHONPATH) is found from anywhere.
    """
    if name in REMEDIATIONS:
        module, _, attribute = REMEDIATIONS[name].entry.partition(":")
        return f"{module}.{attribute}"
    outside = python_flows().get(name)
    if outside is not None:  # a `flows_dir` file: where it is
        return f"{outside[0]}:{outside[1]}"
    from responder.orchestration.flow_catalog import python_name

    return f"flows.yaml_flows.{python_name(name)}"


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
