"""Capture webhook bodies from a real Alertmanager, as the ones in tests/fixtures/alertmanager.

    python -m tests.capture OUT_DIR

starts Debian's `prometheus-alertmanager` on 127.0.0.1, pushes alerts to its API as Prometheus
would, and writes each notification it sends to a local receiver byte for byte (`NAME.json`),
with `index.json` describing each capture and its headers. `tests/test_capture.py` runs it
again and checks that the stored fixtures still have the shape Alertmanager sends.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests import servers
from tests.helpers import free_port

TOKEN = "e2e-secret-token"


@dataclass
class Notification:
    """One request Alertmanager made to the receiver."""

    path: str
    headers: list[tuple[str, str]]
    body: bytes
    received_at: str

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """Every notification the webhook receiver got, in order."""

    notifications: list[Notification] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def next(self, after: int, alerts: list[dict[str, Any]], timeout: float = 30) -> Notification:
        """The first notification numbered `after` (0-based) or later that is about exactly
        these alerts, in the state they were posted in, waiting for it. On a loaded machine
        Alertmanager may flush a group before all its alerts are in, or a previous scenario's
        flush may come late; the right one follows within a group_interval."""
        status = "resolved" if all("endsAt" in alert for alert in alerts) else "firing"
        wanted = sorted((a["labels"]["alertname"], a["labels"]["instance"]) for a in alerts)

        def about(n: Notification) -> bool:
            got = [(a["labels"]["alertname"], a["labels"]["instance"]) for a in n.payload["alerts"]]
            return sorted(got) == wanted and n.payload["status"] == status

        def found() -> Notification | None:
            return next((n for n in self.notifications[after:] if about(n)), None)

        with self.arrived:
            if not self.arrived.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"Alertmanager sent no {status} notification of {wanted}")
            notification = found()
            assert notification is not None
            return notification


@contextmanager
def receiving() -> Iterator[tuple[str, Receiver]]:
    """A webhook receiver on 127.0.0.1; yields its URL and what it received."""
    receiver = Receiver()

    class Handler(servers.QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            note = Notification(
                path=self.path,
                headers=list(self.headers.items()),
                body=body,
                received_at=datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            )
            with receiver.arrived:
                receiver.notifications.append(note)
                receiver.arrived.notify_all()
            self.reply(200)

    with servers.http_server(Handler) as url:
        yield f"{url}/webhook", receiver


def _config(url: str) -> str:
    return f"""
route:
  receiver: responder
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - receiver: responder-bearer
      matchers: ['env="bearer"']
receivers:
  - name: responder
    webhook_configs:
      - url: {url}
        send_resolved: true
  - name: responder-bearer
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
"""


def _alert(
    alertname: str, instance: str, *, env: str = "e2e", ends: datetime | None = None
) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager's API."""
    alert: dict[str, Any] = {
        "labels": {
            "alertname": alertname,
            "env": env,
            "instance": instance,
            "job": "demo",
            "service": "checkout",
            "severity": "critical",
        },
        "annotations": {
            "summary": f"Service checkout is down on {instance}",
            "runbook_url": f"https://runbooks.example.invalid/{alertname}",
        },
        "startsAt": STARTED.isoformat(),
        "generatorURL": "http://127.0.0.1:19090/graph?g0.expr=demo_service_up+%3D%3D+0",
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


STARTED = datetime.now(UTC) - timedelta(minutes=1)


@dataclass(frozen=True)
class Scenario:
    """Alerts pushed in steps; each step's notification is one capture."""

    name: str
    description: str
    alerts: Callable[[], list[dict[str, Any]]]


SCENARIOS = [
    Scenario(
        "firing_single_servicedown",
        "ServiceDown for checkout@host-1; first notification of a new group "
        "(status firing, 1 alert).",
        lambda: [_alert("ServiceDown", "host-1")],
    ),
    Scenario(
        "resolved_single_servicedown",
        "Same alert after the fix: status resolved, endsAt set (send_resolved: true).",
        lambda: [_alert("ServiceDown", "host-1", ends=datetime.now(UTC))],
    ),
    Scenario(
        "firing_group_servicedown_3_hosts",
        "One webhook for a group of 3 alerts (checkout on host-1..3); commonLabels has no "
        "instance.",
        lambda: [_alert("ServiceDownGroup", f"host-{n}") for n in (1, 2, 3)],
    ),
    Scenario(
        "firing_single_servicedown_bearer_auth",
        f"A single alert sent with http_config.authorization Bearer {TOKEN}; see its headers.",
        lambda: [_alert("ServiceDownBearer", "host-1", env="bearer")],
    ),
]


def capture(workdir: Path) -> dict[str, Notification]:
    """Run every scenario against a real Alertmanager; the notification each produced."""
    captured: dict[str, Notification] = {}
    with receiving() as (url, receiver):
        port = free_port()
        with servers.alertmanager(workdir, port, _config(url)) as alertmanager:
            for scenario in SCENARIOS:
                seen = len(receiver.notifications)
                alerts = scenario.alerts()
                response = httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts, timeout=10)
                response.raise_for_status()
                captured[scenario.name] = receiver.next(seen, alerts)
                time.sleep(0.5)  # let a group settle before the next scenario changes it
    return captured


def write(captured: dict[str, Notification], out: Path) -> None:
    """Each capture as `NAME.json` (the exact bytes) plus its entry in `index.json`."""
    out.mkdir(parents=True, exist_ok=True)
    index_file = out / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    descriptions = {scenario.name: scenario.description for scenario in SCENARIOS}
    for name, note in captured.items():
        (out / f"{name}.json").write_bytes(note.body)
        payload = note.payload
        index[name] = {
            "file": f"{name}.json",
            "description": descriptions[name],
            "received_at": note.received_at,
            "request_path": note.path,
            "headers": [list(header) for header in note.headers],
            "group_status": payload["status"],
            "alerts": [
                f"{a['labels']['alertname']}/{a['labels']['instance']}:{a['status']}"
                for a in payload["alerts"]
            ],
        }
    index_file.write_text(json.dumps(index, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for NAME.json and index.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        write(capture(Path(workdir)), args.out)


if __name__ == "__main__":
    main()
