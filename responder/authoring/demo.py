"""A stand-in for the APIs the shipped rules call, for the quick start and the tests.

Every POST is recorded. `POST /restart/<host>/<service>` records a restart, and
`GET /health/<host>/<service>` answers 200 once that service was restarted. Other GETs
(a deploy's health, a disk check) answer 200 once a POST was made to the matching path.
`GET /calls` lists what was received. `GET /metrics` exports, like node_exporter,
`node_filesystem_{avail,size}_bytes` of the hosts in `full_disks`: 3% free until a
`POST /cleanup/<host>`, then 40% (unless `cleanup_frees` is False).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class _Handler(BaseHTTPRequestHandler):
    """Answers for the `DemoService` its server belongs to."""

    server: _DemoServer

    def do_POST(self) -> None:
        demo = self.server.demo
        parts = [unquote(p) for p in self.path.strip("/").split("/")]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with demo._lock:
            demo.posts.append((self.path, body))
            demo.headers.append(dict(self.headers.items()))
            if len(parts) == 3 and parts[0] == "restart":
                demo.restarts.append((parts[1], parts[2]))
        self._send(202, {"accepted": self.path})

    def do_GET(self) -> None:
        demo = self.server.demo
        parts = [unquote(p) for p in self.path.strip("/").split("/")]
        with demo._lock:
            posted = [[unquote(p) for p in path.strip("/").split("/")] for path, _ in demo.posts]
            calls = {"restarts": [list(r) for r in demo.restarts], "posts": demo.posts}
        checks = [i for i, part in enumerate(parts) if part in ("health", "disk-ok")]
        if parts == ["calls"]:
            self._send(200, calls)
        elif parts == ["metrics"]:
            cleaned = {p[1] for p in posted if len(p) == 2 and p[0] == "cleanup"}
            self._send_text(demo.disk_metrics(cleaned))
        elif checks and checks[0] < len(parts) - 1:
            # .../health/<x>/<y> is healthy once a POST to .../<x>/<y> was made.
            tail = parts[checks[0] + 1 :]
            healthy = any(p[-len(tail) :] == tail for p in posted)
            self._send(200 if healthy else 503, {"healthy": healthy})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_text(self, text: str) -> None:
        payload = text.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _DemoServer(ThreadingHTTPServer):
    """The HTTP server of one `DemoService`, which its handlers record into."""

    def __init__(self, address: tuple[str, int], demo: DemoService) -> None:
        self.demo = demo
        super().__init__(address, _Handler)


class DemoService:
    """A tiny HTTP server that pretends to restart services; counts every call."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        full_disks: tuple[str, ...] = (),
        cleanup_frees: bool = True,
    ) -> None:
        self.restarts: list[tuple[str, str]] = []
        self.full_disks = full_disks
        self.cleanup_frees = cleanup_frees
        self.posts: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # of each POST, for tests
        self._lock = threading.Lock()
        self._server = _DemoServer((host, port), self)
        self._thread: threading.Thread | None = None

    def disk_metrics(self, cleaned: set[str]) -> str:
        """The disks of `full_disks` in Prometheus' text format."""
        size = 100 * 2**30
        lines = [
            "# TYPE node_filesystem_avail_bytes gauge",
            "# TYPE node_filesystem_size_bytes gauge",
        ]
        for host in self.full_disks:
            free = 0.40 if host in cleaned and self.cleanup_frees else 0.03
            labels = f'instance="{host}",mountpoint="/"'
            lines.append(f"node_filesystem_avail_bytes{{{labels}}} {int(size * free)}")
            lines.append(f"node_filesystem_size_bytes{{{labels}}} {size}")
        return "\n".join(lines) + "\n"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DemoService:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
