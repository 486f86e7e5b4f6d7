"""Real servers for tests: Prometheus and Alertmanager (Debian packages), and small local
HTTP servers that play a scrape target or a webhook receiver.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest


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
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    return False


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
    workdir: Path, port: int, targets: list[str], *, honor_labels: bool = False
) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1:`port` scraping `targets` (host:port) every second,
    as job "demo"; yields its URL.

    Skips the test if Prometheus is not installed (`make system-deps` installs it).
    """
    binary = find_binary("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed; run `make system-deps`")
    quoted = ", ".join(f"'{target}'" for target in targets)
    (workdir / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
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
