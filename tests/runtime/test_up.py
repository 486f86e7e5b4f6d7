"""`responder up` as a user runs it: its own Prefect server, the flow runner, the receiver.

A real webhook leads to a completed flow run, and SIGINT (Ctrl-C) or SIGTERM (systemd, kill)
leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from responder.authoring.demo import DemoService
from tests.helpers import ROOT, fixture_body, free_port, postgres_database

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


@pytest.mark.parametrize(
    ("stop", "prefect_on_postgresql"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["ctrl-c", "sigterm", "sigterm-prefect-on-postgresql"],
)
def test_up_runs_a_remediation_and_stopping_leaves_no_orphans(
    stop: signal.Signals, prefect_on_postgresql: bool, tmp_path: Path, demo_service: DemoService
) -> None:
    """The embedded default; and with its Prefect server on PostgreSQL, as
    docs/operations.md (Sizing) advises for bursts of runs."""
    with contextlib.ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        if prefect_on_postgresql:
            prefect_database = stack.enter_context(postgres_database("responder_up_prefect"))
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_database
        run_up(stop, env, tmp_path, demo_service)
        if prefect_on_postgresql:
            assert flow_runs_in(prefect_database) >= 1  # the runs were Prefect's on PostgreSQL
    # Responder's launcher of Prefect's server (orchestration/embedded_prefect.py) changes
    # how it begins transactions on SQLite, and leaves Prefect on PostgreSQL as shipped.
    server_log = (tmp_path / "data" / "logs" / "prefect-server.log").read_text()
    immediate = "Prefect's SQLite transactions begin IMMEDIATE" in server_log
    assert immediate is not prefect_on_postgresql, server_log[-2000:]


def flow_runs_in(database_url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return int(await conn.fetchval("select count(*) from flow_run"))
        finally:
            await conn.close()

    return asyncio.run(count())


def run_up(
    stop: signal.Signals, env: dict[str, str], tmp_path: Path, demo_service: DemoService
) -> None:
    port, prefect_port = free_port(), free_port()
    config = tmp_path / "responder.yaml"
    config.write_text(
        f"port: {port}\nprefect_port: {prefect_port}\ndata_dir: {tmp_path / 'data'}\n"
        f"rules_dir: {ROOT / 'rules'}\n"
        f"rule_vars: {{service_control_url: '{demo_service.url}'}}\n"
        "runner_limit: 3\n"
    )
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
            # The banner says "up" only once /readyz answers 200: read the log, then ask.
            announced = "Responder is up" in (tmp_path / "up.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert not announced, "the banner came before /readyz answered 200"
            assert process.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        wait_until_announced = time.monotonic() + 5
        while "Responder is up" not in (banner := (tmp_path / "up.log").read_text()):
            assert time.monotonic() < wait_until_announced, banner
            time.sleep(0.1)
        # The Prefect UI finds its API on this port, not on the default 4200.
        ui = httpx.get(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=5).json()
        assert ui["api_url"] == f"http://127.0.0.1:{prefect_port}/api"
        # The server runs with `responder up`'s settings (EMBEDDED_SERVER_SETTINGS).
        services = httpx.get(f"{ui['api_url']}/admin/settings", timeout=5).json()["server"][
            "services"
        ]
        assert services["late_runs"]["enabled"] is False
        assert services["event_persister"]["batch_size"] == 1000
        assert services["task_run_recorder"]["batch_size"] == 100
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
            rows = httpx.get(f"{base}/api/v1/decisions", timeout=30).json()["decisions"]
            if rows and rows[0]["flow_run_state"]:
                break
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        assert rows[0]["flow_run_state"] == "COMPLETED"
        assert demo_service.restarts == [("host-1", "checkout")]
        look_at_the_run_in_a_browser(prefect_port, rows[0]["flow_run_id"], tmp_path)

        def responder(*args: str, environment: dict[str, str] = env) -> str:
            return subprocess.run(
                [sys.executable, "-m", "responder", *args, "--config", str(config)],
                capture_output=True,
                text=True,
                env=environment,
                timeout=30,
                check=True,
            ).stdout

        shown = responder("decisions")
        assert "ServiceDown{instance=host-1,service=checkout" in shown
        assert "fingerprint 4c49c27c50dac262" in shown  # what `explain` needs
        numbers = [int(line.split()[0][1:]) for line in shown.splitlines() if line[:1] == "#"]
        assert len(numbers) >= 2 and numbers == sorted(numbers, reverse=True)  # newest first
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

        nameless = {k: v for k, v in env.items() if k not in ("USER", "LOGNAME", "LNAME")}
        responder("pause", "--reason", "maintenance of the fleet", environment=nameless)
        me = pwd.getpwuid(os.getuid()).pw_name  # found without $USER
        # No credentials on loopback: the operator is anonymous, and says who they are.
        assert f"paused: maintenance of the fleet (by anonymous, says {me})" in responder("status")
        assert "resumed" in responder("resume")
        assert "admitting" in responder("status")

        tree = descendants(process.pid)
        assert len(tree) >= 2  # the Prefect server and the flow runner, at least
        runners = [
            pid for pid in tree if b"serve-flows" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert runners, "no flow runner among the children"
        assert b"--limit\x003\x00" in Path(f"/proc/{runners[0]}/cmdline").read_bytes()
    finally:
        process.send_signal(stop)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            out.close()
    # A clean stop: SIGTERM (systemd, `make run` stopped) is a success; Ctrl-C is 130 as usual.
    expected = 0 if stop == signal.SIGTERM else 130
    assert process.returncode == expected, (tmp_path / "up.log").read_text()
    time.sleep(0.5)
    assert [pid for pid in tree if alive(pid)] == []


def chromium(*args: str) -> str:
    """Headless Chromium (Debian's `chromium`) with the page's scripts run; its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed; run `make system-deps`")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=20000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def look_at_the_run_in_a_browser(prefect_port: int, flow_run_id: str, tmp_path: Path) -> None:
    """The Prefect UI, in a real browser, shows the run under its name with the artifact
    that says why it exists (the UI reaching its API on this non-default port)."""
    ui = f"http://127.0.0.1:{prefect_port}"

    def dispatch_artifact() -> str | None:
        found = httpx.post(
            f"{ui}/api/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
        ).json()
        return next((a["id"] for a in found if a["key"] == "responder-dispatch"), None)

    deadline = time.monotonic() + 15
    while (artifact := dispatch_artifact()) is None:
        assert time.monotonic() < deadline, "no dispatch artifact"
        time.sleep(0.5)
    page = chromium("--dump-dom", f"{ui}/artifacts/artifact/{artifact}")
    assert "What the guard checked" in page
    assert "restart-crashed-service" in page
    assert "restart-service · ServiceDown checkout@host-1" in page
    shot = tmp_path / "flow-run.png"
    chromium("--window-size=1400,1800", f"--screenshot={shot}", f"{ui}/runs/flow-run/{flow_run_id}")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
