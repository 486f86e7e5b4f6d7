"""Child processes of `responder up`: a local Prefect server and the flow runner.

The runner's environment tells its flow runs where Responder is and how to call it
(`worker_environment`): they ask it before each step that changes something (fencing), and
send Prefect heartbeats, by which Responder notices a runner that was lost.

Each child runs in its own process group, so stopping it stops everything it started, and
asks the kernel to end it should Responder die without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from responder.exceptions import ResponderError
from responder.orchestration.flow_catalog import flow_dirs_environment

if TYPE_CHECKING:
    from responder.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Seconds between a flow run's heartbeats (Prefect's minimum is 30).
HEARTBEAT_SECONDS = 30

# How `responder up` runs the Prefect server it starts (SQLite, this Responder's runs only),
# unless the environment says otherwise. A remediation costs CPU in that server for each
# state, log batch and event; these take away what no remediation needs (docs/operations.md,
# Sizing, has the figures). What the UI shows (runs, states, task runs, logs, artifacts) and
# what Responder reads (the flow-run event stream, for states and heartbeats) stay.
EMBEDDED_SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # No deployment of Responder's has a schedule, and a run started by one would be fenced.
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    # A run waiting for a runner slot would be moved to Late after 15 s: one more state
    # change (a write, an event) for every run of a burst that waits, and it starts the same.
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    # Task runs are recorded from their events, one event per transaction by default; in
    # batches of up to 100, at least once a second, a task run reaches the UI within 1 s.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    # Events are persisted (the UI's event feed) in batches of 20 by default: in a burst, a
    # write every few runs, each one more chance for a flow-run creation's transaction to
    # find its snapshot stale (a 503, asked again). Up to 1,000 per batch, they are written
    # every 5 s (Prefect's flush interval, unchanged), as they are at a quiet time.
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "1000",
}

# How the runner of `responder up` talks to the server Responder started: the same Prefect,
# whose CSRF protection is off. Each client of a run (several per run) otherwise first asks
# the server its version and a CSRF token.
EMBEDDED_CLIENT_SETTINGS = {
    "PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED": "false",
    "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
}


def worker_environment(settings: Settings) -> dict[str, str]:
    """What a flow runner needs to fence its runs (`flows.fencing`) and to be noticed when
    lost: Responder's URL, a token of the operator API, heartbeats.

    The token: `RESPONDER_TOKEN` when set here, else `operator_token`, else the first named
    operator's, else the webhook's bearer token (which the operator API takes when it has no
    tokens of its own). A receiver bound to every address is reached on loopback.
    """
    url = settings.base_url
    if settings.public_url is None:
        url = url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
    env = {
        "RESPONDER_URL": url,
        "RESPONDER_FENCING": "on",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }
    token = os.environ.get("RESPONDER_TOKEN")
    if not token:
        secret = settings.operator_token or (
            settings.operators[0].token if settings.operators else settings.bearer_token
        )
        token = None if secret is None else secret.get_secret_value()
    if token:
        env["RESPONDER_TOKEN"] = token
    if settings.tls_enabled:  # a self-signed certificate verifies itself
        env["RESPONDER_CA_FILE"] = os.environ.get("RESPONDER_CA_FILE") or str(settings.tls_certfile)
    env.update(flow_dirs_environment(settings.flows_dir))  # its flows come from there too
    return env


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        log.info("started %s (pid %s), log: %s", self.name, self.process.pid, self.log_file)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the child's process group, then SIGKILL what is left after the grace."""
        if self.process is None:
            return
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, grace_seconds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait()


class Supervisor:
    """Starts the Prefect server (unless one is given) and the flow runner; stops both."""

    def __init__(
        self,
        data_dir: Path,
        prefect_port: int,
        prefect_api_url: str | None,
        runner_limit: int = 20,
        worker_env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.external_prefect = prefect_api_url is not None
        self.api_url = prefect_api_url or f"http://127.0.0.1:{prefect_port}/api"
        self._prefect_port = prefect_port
        self._runner_limit = runner_limit
        self._worker_env = dict(worker_env or {})
        self.children: list[Child] = []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PREFECT_API_URL"] = self.api_url
        env.setdefault("PREFECT_HOME", str(self.data_dir / "prefect"))
        if not self.external_prefect:
            for name, value in EMBEDDED_CLIENT_SETTINGS.items():
                env.setdefault(name, value)
        return env

    def start(self, ready_timeout: float = 90.0) -> None:
        env = self._env()
        if not self.external_prefect:
            server = Child(
                "prefect-server",
                [  # `prefect server start`, its SQLite transactions begun IMMEDIATE
                    sys.executable,
                    "-m",
                    "responder.orchestration.embedded_prefect",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self._prefect_port),
                ],
                # The UI asks the server where its API is; without this it says port 4200.
                {
                    **EMBEDDED_SERVER_SETTINGS,
                    **{k: v for k, v in env.items() if k != "PREFECT_API_URL"},
                    "PREFECT_UI_API_URL": self.api_url,
                },
                self.data_dir / "logs" / "prefect-server.log",
            )
            server.start()
            self.children.append(server)
        self.wait_for_prefect(ready_timeout)
        runner = Child(
            "flow-runner",
            [sys.executable, "-m", "responder", "serve-flows", "--limit", str(self._runner_limit)],
            {**env, **self._worker_env},
            self.data_dir / "logs" / "flow-runner.log",
        )
        runner.start()
        self.children.append(runner)

    def wait_for_prefect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children:
                if not child.alive:
                    raise ResponderError(
                        f"{child.name} exited during start-up; see {child.log_file}"
                    )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise ResponderError(f"Prefect API {self.api_url} not ready within {timeout:.0f}s")

    def dead_children(self) -> list[Child]:
        return [c for c in self.children if not c.alive]

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children = []
