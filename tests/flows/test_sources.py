"""Flows from outside the package: the `flows_dir` directories' YAML and Python flows are
named without importing them, checked like the package's, and served as Prefect deployments
that run (a real Prefect server and `responder serve-flows`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows import flow_names, load_flow
from flows.sources import ENV, python_flows, use_dirs
from responder.exceptions import FlowFileError
from responder.orchestration.flow_catalog import parameter_errors
from tests.helpers import prefect_post
from tests.servers import serve_flows, wait_for_deployment

PYTHON_FLOW = '''\
"""A remediation written outside Responder's package."""
from pathlib import Path

from prefect import flow


@flow(name="touch-marker")
def touch(path: str, text: str = "ran") -> str:
    """Write a marker file: proof that the run ran."""
    Path(path).write_text(text)
    return text


@flow
def plain_name(count: int) -> int:
    return count


def helper() -> None:
    """Not a flow."""
'''

YAML_FLOW = """\
flow: notify-ops
description: Tell the operators.
risk: low
parameters:
  url: {type: url}
steps:
  - name: tell
    op: http.request
    with: {method: POST, url: "{{ params.url }}"}
"""


@pytest.fixture
def flows_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "more-flows"
    directory.mkdir()
    (directory / "touch.py").write_text(PYTHON_FLOW)
    (directory / "notify.yaml").write_text(YAML_FLOW)
    use_dirs([directory])
    yield directory
    use_dirs([])


def test_the_directories_flows_are_named_without_importing_them(flows_dir: Path) -> None:
    names = flow_names()
    assert {"touch-marker", "plain-name", "notify-ops", "restart-service"} <= set(names)
    assert python_flows() == {
        "touch-marker": (flows_dir / "touch.py", "touch"),
        "plain-name": (flows_dir / "touch.py", "plain_name"),
    }
    assert not any(m.startswith("responder_flows_touch") for m in sys.modules)
    assert os.environ[ENV] == str(flows_dir.resolve())


def test_their_parameters_are_checked_like_the_packages(flows_dir: Path) -> None:
    assert parameter_errors("touch-marker", {"path": "/tmp/x"}) == []
    assert [e["field"] for e in parameter_errors("touch-marker", {"pth": "/x"})] == [
        "path",
        "pth",
    ]
    assert parameter_errors("notify-ops", {"url": "not a url"})[0]["field"] == "url"
    assert load_flow("plain-name").fn(3) == 3


@pytest.mark.parametrize(
    ("name", "text", "line", "needle"),
    [
        ("bad.py", "def broken(:\n", 1, "not Python"),
        (
            "twice.py",
            "from prefect import flow\n\n@flow(name='touch-marker')\ndef f(): ...\n",
            4,
            "flow 'touch-marker' is also declared in",
        ),
        ("bad.yaml", "flow: x\nsteps: [\n", 3, ""),
    ],
)
def test_a_bad_file_is_an_error_at_its_line(
    flows_dir: Path, name: str, text: str, line: int, needle: str
) -> None:
    (flows_dir / name).write_text(text)
    from responder.orchestration.flow_catalog import load_flow_files

    with pytest.raises(FlowFileError) as info:
        flow_names() if name.endswith(".py") else load_flow_files()
    assert (info.value.file, info.value.line) == (str(flows_dir / name), line), str(info.value)
    assert needle in info.value.problem


def test_a_flows_dir_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    use_dirs([tmp_path / "nowhere"])
    try:
        with pytest.raises(FlowFileError, match="no such directory"):
            flow_names()
    finally:
        use_dirs([])


@pytest.mark.prefect
def test_a_flows_dir_flow_is_served_as_a_deployment_and_runs(
    prefect_api_url: str, flows_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "runner.log"
    with serve_flows(prefect_api_url, log) as runner:
        deployment = wait_for_deployment(prefect_api_url, "touch-marker", runner, log)
        assert deployment["entrypoint"].endswith("touch.py:touch")
        wait_for_deployment(prefect_api_url, "notify-ops", runner, log)
        marker = tmp_path / "marker.txt"
        run = prefect_post(
            f"{prefect_api_url}/deployments/{deployment['id']}/create_flow_run",
            {"parameters": {"path": str(marker), "text": "from flows_dir"}},
        )
        assert run.status_code == 201, run.text
        deadline = time.monotonic() + 120
        while True:
            state = httpx.get(f"{prefect_api_url}/flow_runs/{run.json()['id']}").json()["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert time.monotonic() < deadline, f"still {state['type']}:\n{log.read_text()}"
            time.sleep(0.5)
        assert state["type"] == "COMPLETED", log.read_text()[-3000:]
        assert marker.read_text() == "from flows_dir"


def test_responder_catalog_lists_the_directories_flows_and_shows_a_bad_file_as_an_error(
    flows_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from responder.cli import app
    from responder.orchestration.flow_catalog import reload_flows

    config = tmp_path / "responder.yaml"
    config.write_text(f"flows_dir: [{flows_dir}]\n")
    use_dirs([])  # the command reads them from its settings
    runner = CliRunner()
    reload_flows()
    listed = runner.invoke(app, ["catalog", "--config", str(config)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "touch-marker" in listed.output and "notify-ops" in listed.output
    shown = runner.invoke(
        app, ["catalog", "--config", str(config), "show", "touch-marker"], env={"COLUMNS": "300"}
    )
    assert shown.exit_code == 0 and f"{flows_dir / 'touch.py'}:touch" in shown.output

    (flows_dir / "broken.yaml").write_text("flow: broken\nsteps: [\n")
    reload_flows()
    broken = runner.invoke(app, ["catalog", "--config", str(config)])
    assert broken.exit_code == 1
    assert broken.output.startswith(f"{flows_dir / 'broken.yaml'}:3:1: error: ")
    assert "Traceback" not in broken.output
    (flows_dir / "broken.yaml").write_text(
        "from prefect import flow\n@flow\ndef f(): 1 / 0\n1 / 0\n"
    )
    (flows_dir / "broken.yaml").rename(flows_dir / "broken.py")
    reload_flows()
    failing = runner.invoke(app, ["catalog", "--config", str(config)])
    assert failing.exit_code == 1
    assert (
        f"{flows_dir / 'broken.py'}:1:1: error: cannot import: ZeroDivisionError" in failing.output
    )
    reload_flows()
