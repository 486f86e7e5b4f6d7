"""YAML flows: refused with file and line when invalid; run for real on the test Prefect server."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.dsl import FLOWS_DIR, load_flow_file, load_flow_files
from flows.interpreter import RolloutStopped, batch_size, build_flow
from flows.operations import all_operations
from responder.authoring.demo import DemoService
from responder.exceptions import FlowFileError

OPERATIONS = set(all_operations())


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def build(tmp_path: Path, text: str) -> Any:
    return build_flow(load_flow_file(write(tmp_path, text), OPERATIONS))


def test_shipped_yaml_flows_load_and_use_known_operations() -> None:
    sources = load_flow_files(FLOWS_DIR, OPERATIONS)
    assert sources, "flows/ ships YAML flows"
    for name, source in sources.items():
        assert source.file.parent == FLOWS_DIR
        assert build_flow(source).name == name


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        (
            """\
            flow: f
            description: d
            steps:
              - name: a
                op: http.request
              - name: b
                op: shell.exec
            """,
            6,
            "unknown operation 'shell.exec'",
        ),
        (
            """\
            flow: f
            description: d
            steps:
              - name: a
                op: http.request
                verify: {prometheus: x, query: up}
            """,
            4,
            "a step needs exactly one of: op, approval, verify, parallel, batch",
        ),
        (
            """\
            flow: f
            description: d
            steps:
              - name: a
                op: http.request
              - name: a
                op: http.request
            """,
            6,
            "step name 'a' is used twice",
        ),
        (
            """\
            flow: f
            description: d
            steps:
              - name: a
                op: http.request
                with: {url: "{{ params.url "}
            """,
            6,
            "template",
        ),
        (
            """\
            flow: f
            description: d
            parameters:
              hosts: {type: list}
            steps:
              - {name: a, op: http.request}
            """,
            4,
            "`items` is required for type list",
        ),
        (
            """\
            flow: f
            description: d
            parameters:
              approval_required: {type: boolean}
            steps:
              - {name: a, op: http.request}
            """,
            4,
            "reserved",
        ),
        (
            """\
            flow: f
            description: d
            steps:
              - name: a
                op: http.request
                retires: 3
            """,
            4,
            "unknown key 'retires'; accepted keys: name, when, op, with, retries, retry_delay,",
        ),
    ],
    ids=[
        "unknown-op",
        "two-kinds",
        "duplicate-step",
        "bad-template",
        "list-items",
        "reserved",
        "typo",
    ],
)
def test_an_invalid_flow_file_is_refused_with_its_line(
    tmp_path: Path, body: str, line: int, problem: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(FlowFileError) as caught:
        load_flow_file(path, OPERATIONS)
    assert problem in caught.value.problem
    assert caught.value.file == str(path)
    assert caught.value.line == line


@pytest.mark.parametrize(
    ("parameter", "step", "line", "problem"),
    [
        ('{pattern: "("}', "{name: a, op: http.request}", 4, "pattern '(' cannot be used"),
        ("{enum: []}", "{name: a, op: http.request}", 4, "at least 1 item"),
        ("{default: !!binary /w==}", "{name: a, op: http.request}", 4, "not a valid JSON value"),
        ("{}", "{name: a, approval: {message: null}}", 6, "valid string"),
        ("{}", "{name: a, op: http.request, when: []}", 6, "valid string"),
    ],
)
def test_a_flow_that_could_not_run_is_refused_with_its_line(
    tmp_path: Path, parameter: str, step: str, line: int, problem: str
) -> None:
    # Found by tests/test_fuzz.py: these raised TypeError, or loaded and then broke the
    # flow's parameters model (and the catalog).
    text = f"flow: f\ndescription: d\nparameters:\n  p: {parameter}\nsteps:\n  - {step}\n"
    with pytest.raises(FlowFileError) as caught:
        load_flow_file(write(tmp_path, text), OPERATIONS)
    assert problem in caught.value.problem
    assert caught.value.line == line


def test_a_flow_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_bytes(b"flow: \xed\n")
    with pytest.raises(FlowFileError, match="not UTF-8"):
        load_flow_file(path, OPERATIONS)


def test_a_flow_name_declared_twice_is_refused(tmp_path: Path) -> None:
    flow = "flow: same\ndescription: d\nsteps: [{name: a, op: http.request}]\n"
    write(tmp_path, flow, "a.yaml")
    write(tmp_path, flow, "b.yaml")
    with pytest.raises(FlowFileError, match="also declared in"):
        load_flow_files(tmp_path, OPERATIONS)


@pytest.mark.parametrize(
    ("size", "total", "expected"), [("2", 5, 2), ("25%", 6, 1), ("50%", 10, 5)]
)
def test_batch_size_is_a_count_or_a_percentage(size: str, total: int, expected: int) -> None:
    assert batch_size(size, total) == expected


RESTART = """\
flow: restart-and-check
description: Restart a service on a host, then check its health.
parameters:
  host: {type: hostname}
  base: {type: url}
  note: {type: string, default: ""}
  skip_check: {type: boolean, default: false}
steps:
  - name: restart
    op: http.request
    with:
      method: POST
      url: "{{ params.base }}/restart/{{ params.host | segment }}/api"
      json_body: {note: "{{ params.note }}"}
  - name: health
    op: http.request
    when: "not params.skip_check and steps.restart.status_code == 202"
    with: {url: "{{ params.base }}/health/{{ params.host | segment }}/api"}
    retries: 0
"""


@pytest.mark.prefect
def test_a_yaml_flow_runs_each_step_as_a_named_task_run(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    restart = build(tmp_path, RESTART)
    state = restart(host="host-1", base=demo_service.url, return_state=True)
    assert state.is_completed(), state.message
    assert demo_service.restarts == [("host-1", "api")]
    runs = httpx.post(
        f"{prefect_api_url}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}}},
    ).json()
    assert sorted(run["name"] for run in runs) == ["health", "restart"]


@pytest.mark.prefect
def test_a_false_condition_skips_a_step(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    restart = build(tmp_path, RESTART)
    summary = restart(host="host-2", base=demo_service.url, skip_check=True)
    assert summary == "restart-and-check: done (restart)"


@pytest.mark.prefect
def test_a_bad_host_is_refused_before_any_step(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    from prefect.exceptions import ParameterTypeError

    restart = build(tmp_path, RESTART)
    with pytest.raises(ParameterTypeError, match="host"):
        restart(host="host-1;rm -rf /", base=demo_service.url)
    assert demo_service.posts == []


@pytest.mark.prefect
def test_template_syntax_in_a_parameter_stays_literal_data(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    restart = build(tmp_path, RESTART)
    hostile = "{{ 7*7 }} {% for x in [1] %}x{% endfor %} $(id)"
    restart(host="host-3", base=demo_service.url, note=hostile)
    assert demo_service.posts[0][1] == {"note": hostile}


@pytest.mark.prefect
def test_parallel_steps_all_run_and_their_results_are_kept(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    both = build(
        tmp_path,
        """\
        flow: both
        description: Two calls at once, then one that needs both.
        parameters: {base: {type: url}}
        steps:
          - name: together
            parallel:
              - {name: left, op: http.request, with: {method: POST, url: "{{ params.base }}/l"}}
              - {name: right, op: http.request, with: {method: POST, url: "{{ params.base }}/r"}}
          - name: after
            op: http.request
            when: "steps.together.left.ok and steps.right.status_code == 202"
            with: {method: POST, url: "{{ params.base }}/after"}
        """,
    )
    both(base=demo_service.url)
    paths = [path for path, _ in demo_service.posts]
    assert sorted(paths[:2]) == ["/l", "/r"]
    assert paths[2] == "/after"


ROLLOUT = """\
flow: rolling-restart
description: Restart a service host by host, checking each.
parameters:
  hosts: {type: list, items: hostname, min_items: 1}
  base: {type: url}
  broken: {type: string, default: none}
  max_failures: {type: integer, default: 0}
steps:
  - name: roll
    batch:
      over: "{{ params.hosts }}"
      size: "2"
      max_failures: "{{ params.max_failures }}"
      steps:
        - name: restart
          op: http.request
          when: "host != params.broken"
          with: {method: POST, url: "{{ params.base }}/restart/{{ host | segment }}/api"}
        - name: check
          op: http.request
          retries: 0
          with: {url: "{{ params.base }}/health/{{ host | segment }}/api"}
"""


@pytest.mark.prefect
def test_a_rollout_goes_batch_by_batch(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    roll = build(tmp_path, ROLLOUT)
    roll(hosts=["h1", "h2", "h3"], base=demo_service.url)
    assert sorted(demo_service.restarts[:2]) == [("h1", "api"), ("h2", "api")]
    assert demo_service.restarts[2:] == [("h3", "api")]


@pytest.mark.prefect
def test_a_rollout_stops_when_more_fail_than_allowed(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    roll = build(tmp_path, ROLLOUT)
    with pytest.raises(RolloutStopped, match=r"1 failed \(\['h2'\]\).*not started: \['h3', 'h4'\]"):
        roll(hosts=["h1", "h2", "h3", "h4"], base=demo_service.url, broken="h2")
    assert sorted(demo_service.restarts) == [("h1", "api")]


@pytest.mark.prefect
def test_a_rollout_tolerates_its_max_failures(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    roll = build(tmp_path, ROLLOUT)
    state = roll(
        hosts=["h1", "h2", "h3"],
        base=demo_service.url,
        broken="h2",
        max_failures=1,
        return_state=True,
    )
    assert state.is_completed()
    assert sorted(demo_service.restarts) == [("h1", "api"), ("h3", "api")]


def test_the_catalog_command_lists_and_shows() -> None:
    from typer.testing import CliRunner

    from responder.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["catalog"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    names = [line.split()[0] for line in listed.output.splitlines()[1:] if line.strip()]
    assert {"http.request", "command.run", "approval", "clean-disk", "restart-service"} <= set(
        names
    )
    shown = runner.invoke(app, ["catalog", "show", "clean-disk"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "flows/clean-disk.yaml" in shown.output
    assert "mountpoint" in shown.output
    missing = runner.invoke(app, ["catalog", "show", "no-such-flow"])
    assert missing.exit_code == 1


@pytest.mark.prefect
def test_the_shipped_batched_restart_restarts_every_host_and_checks_it(
    prefect_api_url: str, demo_service: DemoService
) -> None:
    from flows import load_flow

    restart = load_flow("restart-in-batches")
    hosts = [f"web-{i}" for i in range(5)]
    restart(
        service="api",
        hosts=hosts,
        control_url=demo_service.url,
        batch_size="40%",
        pause_seconds=0.2,
    )
    done = [host for host, _ in demo_service.restarts]
    assert [set(done[0:2]), set(done[2:4]), done[4:]] == [
        {"web-0", "web-1"},
        {"web-2", "web-3"},
        ["web-4"],
    ]


@pytest.mark.prefect
def test_a_step_timeout_stops_a_slow_operation(prefect_api_url: str, tmp_path: Path) -> None:
    slow = build(
        tmp_path,
        """\
        flow: slow
        description: A command slower than its step's timeout.
        steps:
          - name: nap
            op: command.run
            timeout: 1s
            with: {argv: [sleep, "20"]}
        """,
    )
    started = time.monotonic()
    state = slow(return_state=True)
    assert state.is_failed()
    assert (
        "timed out" in (state.message or "").lower()
        or "timeout" in str(state.result(raise_on_failure=False)).lower()
    )
    assert time.monotonic() - started < 15


APPROVAL = """\
flow: approve-then-call
description: Ask a person, then call.
parameters: {base: {type: url}}
steps:
  - name: ask
    approval: {message: "call {{ params.base }}?", timeout: 2m}
  - name: call
    op: http.request
    with: {method: POST, url: "{{ params.base }}/called"}
"""


@pytest.mark.prefect
@pytest.mark.parametrize("approved", [True, False])
def test_an_approval_step_waits_for_a_persons_answer(
    approved: bool, prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    import threading

    flow = build(tmp_path, APPROVAL)
    states: list[Any] = []
    runner = threading.Thread(
        target=lambda: states.append(flow(base=demo_service.url, return_state=True))
    )
    runner.start()
    deadline = time.monotonic() + 60
    paused: list[dict[str, Any]] = []
    while not paused and time.monotonic() < deadline:
        runs = httpx.post(
            f"{prefect_api_url}/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}},
        ).json()
        paused = [r for r in runs if r["parameters"].get("base") == demo_service.url]
        time.sleep(0.3)
    assert paused, "the run never paused for approval"
    assert demo_service.posts == []  # nothing happens before the answer
    answer = {"approved": approved, "approver": "alice", "comment": "go" if approved else "no"}
    # The run is PAUSED a moment before it has registered the input it waits for; until
    # then Prefect refuses the answer (4xx), which a loaded machine makes visible.
    deadline = time.monotonic() + 15
    while True:
        response = httpx.post(
            f"{prefect_api_url}/flow_runs/{paused[0]['id']}/resume", json={"run_input": answer}
        )
        if response.is_success or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.json().get("status") == "ACCEPT", response.text
    runner.join(60)
    (state,) = states
    if approved:
        assert state.is_completed()
        assert [path for path, _ in demo_service.posts] == ["/called"]
    else:
        assert state.is_cancelled()
        assert state.message == "rejected by alice: no"
        assert demo_service.posts == []


@pytest.mark.prefect
def test_an_unanswered_approval_times_out_and_the_run_fails_before_acting(
    prefect_api_url: str, demo_service: DemoService, tmp_path: Path
) -> None:
    flow = build(tmp_path, APPROVAL.replace("timeout: 2m", "timeout: 3s"))
    state = flow(base=demo_service.url, return_state=True)
    assert state.is_failed()
    assert "never resumed" in (state.message or "")
    assert demo_service.posts == []


def test_a_url_parameter_is_kept_as_written(tmp_path: Path) -> None:
    """`"{{ params.base }}/fix"` must request `/fix`, not `//fix`: a url is checked, not
    rewritten (pydantic's AnyHttpUrl adds a slash to a bare host)."""
    path = tmp_path / "u.yaml"
    path.write_text(
        "flow: u\ndescription: d\nparameters: {base: {type: url}}\n"
        "steps: [{name: s, op: http.request, with: {url: '{{ params.base }}/fix'}}]\n"
    )
    model = load_flow_file(path, set(all_operations())).spec.parameters_model
    assert model.model_validate({"base": "http://127.0.0.1:9"}).base == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="URL"):
        model.model_validate({"base": "not a url"})
    assert model.model_json_schema()["properties"]["base"]["format"] == "uri"
