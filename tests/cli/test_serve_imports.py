"""`responder serve` without Prefect to dispatch to decides without importing Prefect, nor
the operations' clients (apprise, lightkube): they cost seconds of start-up and tens of MB
in a process that runs no flow (docs/benchmarks.md, issue 20). A decision whose parameters
its flow refuses is still refused, for a Python flow and for a YAML flow alike.

The command runs in a child process, exactly as `python -m responder serve` runs it; a
thread of that process sends the alerts once it is ready, waits for their decisions and
writes down which modules were loaded, then stops it as Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, free_port

# httpx (and the CLI of its own it imports when rich and pygments are there: ~3 MB) is for
# talking to Prefect, Alertmanager or, from the operator commands, to Responder.
HEAVY = ("prefect", "apprise", "lightkube", "httpx")

RULES = """\
rules:
  - name: restart
    match: ['alertname="ServiceDown"']
    run:
      flow: restart-service
      parameters:
        host: "{{ alert.labels.instance }}"
        service: api
        restart_url: http://127.0.0.1:9/restart
        health_url: http://127.0.0.1:9/health
    guard: {key: "restart/{{ alert.labels.instance }}"}
  - name: clean
    match: ['alertname="DiskFull"']
    run:
      flow: clean-disk
      parameters:
        host: "{{ alert.labels.instance }}"
        agent_url: http://127.0.0.1:9/agent
        prometheus_url: http://127.0.0.1:9/prometheus
    guard: {key: "clean/{{ alert.labels.instance }}"}
"""

PROBE = """\
import json, os, signal, sys, threading, time
import urllib.error, urllib.request

url, out, alerts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def call(path, body=None):  # urllib, not httpx: httpx must stay out of serve's modules
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None

def probe():
    try:
        while True:
            try:
                if call("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        at_ready = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        webhook = {"version": "4", "status": "firing", "receiver": "responder",
                   "groupKey": "{}", "alerts": alerts}
        assert call("/webhook/alertmanager", webhook)[0] == 200
        for _ in range(600):
            decided = call("/api/v1/decisions")[1]["decisions"]
            if len(decided) >= len(alerts):
                break
            time.sleep(0.05)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        with open(out, "w") as f:
            json.dump({"at_ready": at_ready, "after": loaded, "decisions": decided}, f)
    finally:
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=probe, daemon=True).start()
from responder.cli.commands import main
sys.argv = ["responder", "serve", "--port", url.rsplit(":", 1)[1]]
main()
""".replace("HEAVY", repr(HEAVY))


def _alert(name: str, instance: str, n: int) -> dict[str, object]:
    return {
        "status": "firing",
        "labels": {"alertname": name, "instance": instance},
        "annotations": {},
        "startsAt": "2026-12-04T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{n:016x}",
    }


def test_serve_decides_without_importing_prefect_and_still_refuses_bad_parameters(
    tmp_path: Path,
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    alerts = [
        _alert("ServiceDown", "web-1", 1),
        _alert("ServiceDown", "web-2;reboot", 2),  # not a host: restart-service refuses it
        _alert("DiskFull", "db-1", 3),
        _alert("DiskFull", "-oProxyCommand=x", 4),  # not a host: clean-disk refuses it
    ]
    out = tmp_path / "seen.json"
    env = {
        **os.environ,
        "RESPONDER_DATA_DIR": str(tmp_path / "data"),
        "RESPONDER_RULES_DIR": str(tmp_path / "rules"),
        "RESPONDER_SERVICES_FILE": str(tmp_path / "none.yaml"),
    }
    for name in ("PREFECT_API_URL", "RESPONDER_PREFECT_API_URL", "RESPONDER_DATABASE_URL"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, str(out), json.dumps(alerts)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), done.stdout + done.stderr
    seen = json.loads(out.read_text())
    verdicts = {
        (d["labels"]["instance"], d["verdict"], d["reason"].startswith("parameters do not fit"))
        for d in seen["decisions"]
    }
    assert verdicts == {
        ("web-1", "admitted", False),
        ("web-2;reboot", "error", True),
        ("db-1", "admitted", False),
        ("-oProxyCommand=x", "error", True),
    }, seen["decisions"]
    assert seen["at_ready"] == [], "imported before /readyz answered"
    assert seen["after"] == [], "imported to decide"
