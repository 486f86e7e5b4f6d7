"""Deploying the flows to a work pool: `responder deploy` writes a prefect.yaml that Prefect's
own `prefect deploy` registers on a real Prefect server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from flows import flow_names
from responder.authoring.demo import DemoService
from responder.cli import app
from tests.helpers import POSTGRES_URL, ROOT, fixture_body, free_port, reset_postgres

pytestmark = pytest.mark.prefect


def test_prefect_deploy_registers_every_flow_to_the_work_pool(
    prefect_api_url: str, tmp_path: Path
) -> None:
    pool = "remediation-test"
    created = httpx.post(f"{prefect_api_url}/work_pools/", json={"name": pool, "type": "process"})
    assert created.status_code in (201, 409), created.text
    prefect_file = tmp_path / "prefect.yaml"
    result = CliRunner().invoke(app, ["deploy", "--work-pool", pool, "--output", str(prefect_file)])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(prefect_file.read_text())
    assert sorted(d["name"] for d in document["deployments"]) == flow_names()
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    for name in flow_names():
        response = httpx.get(f"{prefect_api_url}/deployments/name/{name}/{name}")
        assert response.status_code == 200, name
        assert response.json()["work_pool_name"] == pool


def test_the_runner_says_it_is_at_capacity_once_a_minute_not_every_second() -> None:
    import logging

    from responder.orchestration.deployments import AtCapacityOncePerMinute

    def record(message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("prefect.runner", logging.INFO, __file__, 1, message, args, None)

    quiet = AtCapacityOncePerMinute(every_seconds=0.2)
    skipped = AtCapacityOncePerMinute.MESSAGE
    assert quiet.filter(record(skipped, 3))
    assert not quiet.filter(record(skipped, 4))
    assert quiet.filter(record("Submitting flow run %s", "x"))  # anything else passes
    time.sleep(0.25)
    assert quiet.filter(record(skipped, 5))


WARM_RUN = """
import json, multiprocessing.forkserver, os, sys
from prefect import flow
import prefect.flow_engine
from responder.orchestration.deployments import start_flow_runs_warm

@flow(name="where-am-i")
def where_am_i(out: str) -> None:
    with open(out, "w") as f:
        json.dump({"ppid": os.getppid(), "preloaded": "flows.remediations" in sys.modules}, f)

if __name__ == "__main__":
    start_flow_runs_warm(["flows.remediations"])
    process = prefect.flow_engine.run_flow_in_subprocess(
        where_am_i, parameters={"out": sys.argv[1]}
    )
    process.join(120)
    print(json.dumps({
        "kind": type(process).__name__,
        "exitcode": process.exitcode,
        "forkserver": multiprocessing.forkserver._forkserver._forkserver_pid,
    }))
"""


def test_a_served_flow_run_is_forked_from_a_process_with_the_flows_imported(
    prefect_api_url: str, tmp_path: Path
) -> None:
    """What `serve_flows` makes of Prefect's runner: each run a fork of a warm process (not a
    fresh interpreter importing Prefect and the flows), still a real Prefect flow run."""
    script, out = tmp_path / "warm.py", tmp_path / "where.json"
    script.write_text(WARM_RUN)
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parent = json.loads(done.stdout.strip().splitlines()[-1])
    assert parent["kind"] == "ForkServerProcess"
    assert parent["exitcode"] == 0, done.stderr[-3000:]
    child = json.loads(out.read_text())
    assert child == {"ppid": parent["forkserver"], "preloaded": True}
    runs = httpx.post(
        f"{prefect_api_url}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["where-am-i"]}}},
    ).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"]


def _prefect_server(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server of the test's own (its runs and deployments are nobody else's)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 240
    while not _answers(f"{api}/health"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return process, api


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.postgres
@pytest.mark.timeout(900)
async def test_a_process_worker_elsewhere_runs_what_serve_on_postgresql_dispatches(
    tmp_path: Path, demo_service: DemoService
) -> None:
    """The topology of docs/operations.md: `responder serve` on PostgreSQL creates the run,
    a Prefect process worker (its own process tree, its own copy of the project and working
    directory, as on another machine) pulls it from the work pool and runs it. The run asks
    Responder before it acts (fencing, on unless switched off): without `RESPONDER_URL` in
    the worker's environment it would act on nothing and fail."""
    await reset_postgres()
    checkout = tmp_path / "worker-machine"  # the project as installed on the worker
    for package in ("flows", "responder"):
        shutil.copytree(
            ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    server, api = _prefect_server(tmp_path / "prefect-home", tmp_path / "prefect.log")
    children = [server]
    try:
        pool = "remediation"
        created = httpx.post(f"{api}/work_pools/", json={"name": pool, "type": "process"})
        assert created.status_code == 201, created.text
        worker_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        worker_env.update(
            PREFECT_API_URL=api,
            PREFECT_HOME=str(tmp_path / "worker-home"),
            PYTHONPATH=str(checkout),
        )
        for argv in (
            ["-m", "responder", "deploy", "--work-pool", pool, "--output", "prefect.yaml"],
            ["-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"],
        ):
            done = subprocess.run(
                [sys.executable, *argv],
                cwd=checkout,
                env=worker_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        serve_port = free_port()
        rules = tmp_path / "rules"
        rules.mkdir()
        shutil.copy(ROOT / "rules" / "restart-service.yaml", rules)
        serve_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        serve_env.update(
            PYTHONPATH=str(ROOT),
            RESPONDER_DATABASE_URL=POSTGRES_URL,
            RESPONDER_PREFECT_API_URL=api,
            RESPONDER_PORT=str(serve_port),
            RESPONDER_DATA_DIR=str(tmp_path / "serve-data"),
            RESPONDER_RULES_DIR=str(rules),
            RESPONDER_SERVICES_FILE=str(tmp_path / "none.yaml"),
            RESPONDER_RULE_VARS=json.dumps({"service_control_url": demo_service.url}),
        )
        serve_log = tmp_path / "serve.log"
        with serve_log.open("wb") as out:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "responder", "serve"],
                    cwd=tmp_path,
                    env=serve_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        base = f"http://127.0.0.1:{serve_port}"
        deadline = time.monotonic() + 120
        while not _answers(f"{base}/readyz"):
            assert children[-1].poll() is None, serve_log.read_text()[-3000:]
            assert time.monotonic() < deadline, serve_log.read_text()[-3000:]
            time.sleep(0.5)

        workdir = tmp_path / "worker-cwd"
        workdir.mkdir()
        worker_log = tmp_path / "worker.log"
        worker_env.update(RESPONDER_URL=base, PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30")
        with worker_log.open("wb") as out:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                    cwd=workdir,
                    env=worker_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        response = httpx.post(
            f"{base}/webhook/alertmanager",
            content=fixture_body("firing_single_servicedown"),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 300
        while True:
            rows = httpx.get(f"{base}/api/v1/decisions", timeout=30).json()["decisions"]
            admitted = [r for r in rows if r["flow_run_id"]]
            if admitted and admitted[0]["flow_run_state"] in ("COMPLETED", "FAILED", "CRASHED"):
                break
            assert time.monotonic() < deadline, worker_log.read_text()[-4000:]
            time.sleep(1)
        assert admitted[0]["flow_run_state"] == "COMPLETED", worker_log.read_text()[-4000:]
        assert demo_service.restarts == [("host-1", "checkout")]
        run_id = admitted[0]["flow_run_id"]
        run = httpx.get(f"{api}/flow_runs/{run_id}").json()
        assert run["work_pool_name"] == pool
        assert run_id in worker_log.read_text()  # this worker ran it
    finally:
        for child in reversed(children):
            _stop(child)
