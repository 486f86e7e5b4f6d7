"""Deploying the flows to a work pool: `responder deploy` writes a prefect.yaml that Prefect's
own `prefect deploy` registers on a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from flows import flow_names
from responder.cli import app
from tests.helpers import ROOT

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
