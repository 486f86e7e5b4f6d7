"""Real servers for tests: Prometheus, Alertmanager and sshd (Debian packages), and small
local HTTP servers that play a scrape target or a webhook receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.operations.ssh import SshRun
from tests.helpers import free_port, wait_for


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr, with a `reply` helper."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free 127.0.0.1 port in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def find_binary(*names: str) -> str | None:
    """The first of these programs found on PATH."""
    for name in names:
        if path := shutil.which(name):
            return path
    return None


@contextlib.contextmanager
def run_server(command: list[str], url: str, log: Path, timeout: float = 30) -> Iterator[str]:
    """Run a server binary until the block ends; yields `url` once its /-/ready answers 200.

    Fails the test, with the server's output, if it exits or is not ready within `timeout`.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                state = "exited" if process.poll() is not None else "is not ready"
                pytest.fail(f"{Path(command[0]).name} {state}:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        stop(process, grace=10)


def stop(process: subprocess.Popen[Any], grace: float = 20) -> None:
    """SIGTERM a child process; SIGKILL it if it is still there after `grace` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def serve_flows(prefect_api_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`responder serve-flows` against a Prefect server, its output in `log`; stopped after."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "responder", "serve-flows"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def wait_for_deployment(
    api: str, name: str, runner: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> dict[str, object]:
    """The deployment `name` once the runner has created it (an error with its log if the
    runner ends or `timeout` passes first)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{api}/deployments/name/{name}/{name}")
        if response.status_code == 200:
            return dict(response.json())
        if runner.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no deployment {name}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


async def serve_in_process(settings: Any, service: Any) -> tuple[Any, asyncio.Task[Any]]:
    """Responder's HTTP server (`responder serve`'s uvicorn set-up, TLS included) in this
    event loop; returns once it listens. Stop it with `server.should_exit = True`."""
    from responder.cli.server import http_server

    server = http_server(settings, service)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not task.done(), task
        return bool(server.started)

    await wait_for(started, timeout=30)
    return server, task


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    return False


# An Alertmanager configuration that routes every alert nowhere.
ROUTES_NOWHERE = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@contextlib.contextmanager
def alertmanager(workdir: Path, port: int, config: str) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1:`port` with this configuration; yields its URL.

    Fails the test if it is not installed (`make system-deps` installs it).
    """
    binary = find_binary("prometheus-alertmanager", "alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager is not installed; run `make system-deps`")
    (workdir / "alertmanager.yml").write_text(config)
    command = [
        binary,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with run_server(command, f"http://127.0.0.1:{port}", workdir / "alertmanager.log") as url:
        yield url


@contextlib.contextmanager
def prometheus(
    workdir: Path,
    port: int,
    targets: list[str],
    *,
    honor_labels: bool = False,
    alerting_rules: str | None = None,
) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1:`port` scraping `targets` (host:port) every second,
    as job "demo", evaluating `alerting_rules` (a rule file's YAML) every second if given;
    yields its URL.

    Skips the test if Prometheus is not installed (`make system-deps` installs it).
    """
    binary = find_binary("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed; run `make system-deps`")
    quoted = ", ".join(f"'{target}'" for target in targets)
    rule_files = ""
    if alerting_rules is not None:
        (workdir / "alerting-rules.yml").write_text(alerting_rules)
        rule_files = f"rule_files: ['{workdir / 'alerting-rules.yml'}']"
    (workdir / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
{rule_files}
scrape_configs:
  - job_name: demo
    honor_labels: {"true" if honor_labels else "false"}
    static_configs:
      - targets: [{quoted}]
"""
    )
    command = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with run_server(command, f"http://127.0.0.1:{port}", workdir / "prometheus.log") as url:
        yield url


SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class Sshd:
    """A running sshd that accepts `client_key` for the current user."""

    port: int
    client_key: Path
    host_key_line: str
    known_hosts: Path

    def params(self, argv: list[str], **overrides: Any) -> SshRun:
        """Parameters that reach this sshd as the current user, trusting only its host key."""
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": getpass.getuser(),
            "identity_file": str(self.client_key),
            "known_hosts_file": str(self.known_hosts),
            "argv": argv,
            "connect_timeout_seconds": 5,
            "timeout_seconds": 30,
        }
        return SshRun(**{**values, **overrides})


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def real_sshd(base: Path) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 with its own host key, accepting one generated client key
    for the current user; its files live in `base`."""
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is not installed (Debian package openssh-server)")
    base.mkdir(parents=True, exist_ok=True)
    keygen(base / "host_key")
    keygen(base / "client_key")
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {base / 'host_key'}\n"
        f"PidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
    )
    # sshd started as root needs its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = base / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        key_type, key = (base / "host_key.pub").read_text().split()[:2]
        known_hosts = base / "known_hosts"
        line = f"[127.0.0.1]:{port} {key_type} {key}\n"
        known_hosts.write_text(line)
        yield Sshd(port, base / "client_key", line, known_hosts)
    finally:
        process.terminate()
        process.wait(10)
