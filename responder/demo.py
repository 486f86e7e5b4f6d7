"""A stand-in for a real service's control API, for the quick start and the tests.

`POST /restart/<host>/<service>` records a restart; `GET /health/<host>/<service>` answers
200 once that service was restarted; `GET /calls` lists what was received.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class DemoService:
    """A tiny HTTP server that pretends to restart services; counts every call."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.restarts: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        demo = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = [unquote(p) for p in self.path.strip("/").split("/")]
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                if len(parts) == 3 and parts[0] == "restart":
                    with demo._lock:
                        demo.restarts.append((parts[1], parts[2]))
                    self._send(202, {"restarting": parts[1:]})
                else:
                    self._send(404, {"error": "not found"})

            def do_GET(self) -> None:
                parts = [unquote(p) for p in self.path.strip("/").split("/")]
                if parts == ["calls"]:
                    with demo._lock:
                        self._send(200, {"restarts": [list(r) for r in demo.restarts]})
                elif len(parts) == 3 and parts[0] == "health":
                    with demo._lock:
                        healthy = (parts[1], parts[2]) in demo.restarts
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

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

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
