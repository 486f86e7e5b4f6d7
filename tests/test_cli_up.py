"""`responder up` as a user runs it: its own Prefect server, the flow runner, the receiver.

A real webhook leads to a completed flow run, and SIGINT (Ctrl-C) or SIGTERM (systemd, kill)
leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from responder.demo import DemoService
from tests.conftest import ROOT, fixture_body, free_port

pytestmark = pytest.mark.prefect


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_runs_a_remediation_and_stopping_leaves_no_orphans(
    stop: signal.Signals, tmp_path: Path, demo_service: DemoService
) -> None:
    port, prefect_port = free_port(), free_port()
    config = tmp_path / "responder.yaml"
    config.write_text(
        f"port: {port}\nprefect_port: {prefect_port}\ndata_dir: {tmp_path / 'data'}\n"
        f"rules_dir: {ROOT / 'rules'}\n"
        f"rule_vars: {{service_control_url: '{demo_service.url}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "responder", "up", "--config", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        banner = (tmp_path / "up.log").read_text()
        assert f"{base}/webhook/alertmanager" in banner
        assert f"http://127.0.0.1:{prefect_port}" in banner
        assert "webhook_configs" in banner

        body = fixture_body("firing_single_servicedown")
        response = httpx.post(
            f"{base}/webhook/alertmanager",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 90
        while True:
            rows = httpx.get(f"{base}/api/v1/decisions").json()["decisions"]
            if rows and rows[0]["flow_run_state"]:
                break
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        assert rows[0]["flow_run_state"] == "COMPLETED"
        assert demo_service.restarts == [("host-1", "checkout")]

        def responder(*args: str) -> str:
            return subprocess.run(
                [sys.executable, "-m", "responder", *args, "--config", str(config)],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=True,
            ).stdout

        shown = responder("decisions")
        assert "ServiceDown{instance=host-1,service=checkout" in shown
        assert "restart-crashed-service → admitted" in shown
        run_url = f"http://127.0.0.1:{prefect_port}/runs/flow-run/{rows[0]['flow_run_id']}"
        assert f"COMPLETED  {run_url}" in shown

        story = responder("explain", "4c49c27c50dac262")
        assert "restart-crashed-service → admitted" in story
        assert "still firing" in story

        assert "paused: maintenance of the fleet" in responder(
            "pause", "--reason", "maintenance of the fleet"
        )
        story = responder("explain", "4c49c27c50dac262")
        assert "restart-crashed-service → admitted" in story
        assert "still firing" in story

        assert "paused: maintenance of the fleet" in responder("status")
        assert "resumed" in responder("resume")
        assert "admitting" in responder("status")

        tree = descendants(process.pid)
        assert len(tree) >= 2  # the Prefect server and the flow runner, at least
    finally:
        process.send_signal(stop)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            out.close()
    time.sleep(0.5)
    assert [pid for pid in tree if alive(pid)] == []
