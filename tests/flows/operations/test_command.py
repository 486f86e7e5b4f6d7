"""`command.run` for real: real programs, run as Prefect tasks against the test server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from flows.operations import OPERATIONS
from flows.operations.command import (
    OUTPUT_LIMIT,
    CommandFailed,
    CommandResult,
    CommandRun,
    command_run,
)

pytestmark = pytest.mark.prefect

PRINT_ARGV = "import sys, json; print(json.dumps(sys.argv[1:]))"


def python(code: str, *args: str, **params: Any) -> CommandRun:
    """Parameters that run `code` with this interpreter (an absolute path)."""
    return CommandRun(argv=[sys.executable, "-c", code, *args], **params)


def hostile(marker: Path, victim: Path) -> str:
    """An argument full of shell and template syntax that would touch `marker` if evaluated."""
    return f"$(touch {marker}); rm -rf {victim} ; echo {{{{ 7*7 }}}} `touch {marker}` | id"


@flow(name="test-command-run")
def in_flow(params: CommandRun) -> CommandResult:
    """Run the operation as a flow's task, as remediations do (its logs need a flow run)."""
    return command_run(params)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_captures_stdout_stderr_and_exit_code(prefect_api_url: str) -> None:
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
    result = in_flow(python(code, expected_exit_codes=[0, 3]))
    assert isinstance(result, CommandResult)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "to stdout\n", "to stderr\n")
    assert not (result.stdout_truncated or result.stderr_truncated or result.timed_out)
    assert result.argv[0] == sys.executable
    assert 0 < result.duration_seconds < 30


def test_unexpected_exit_code_fails_with_the_output(prefect_api_url: str) -> None:
    code = "import sys; print('partial work'); print('disk full', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandFailed, match=r"exited 3; expected one of \[0\]: disk full") as info:
        in_flow(python(code))
    assert info.value.result.exit_code == 3
    assert info.value.result.stdout == "partial work\n"


def test_timeout_kills_the_whole_process_group(prefect_api_url: str) -> None:
    # The shell starts a child that would outlive it, prints the child's pid, then waits.
    params = CommandRun(argv=["sh", "-c", "sleep 300 & echo $!; wait"], timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after") as info:
        in_flow(params)
    assert time.monotonic() - started < 20
    result = info.value.result
    assert result.timed_out
    assert result.exit_code == -9
    child = int(result.stdout)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child), f"sleep {child} survived the timeout"


def test_big_output_keeps_head_and_tail(prefect_api_url: str) -> None:
    code = (
        "import sys; sys.stdout.write('HEAD' + 'x' * 200000 + 'TAIL');sys.stderr.write('é' * 50000)"
    )
    result = in_flow(python(code))
    assert result.stdout_truncated and result.stderr_truncated
    assert result.stdout.startswith("HEAD") and result.stdout.endswith("TAIL")
    dropped = 200008 - OUTPUT_LIMIT
    assert f"[... {dropped} bytes cut ...]" in result.stdout
    assert len(result.stdout) < OUTPUT_LIMIT + 100
    # 2-byte characters cut in the middle become U+FFFD, never an error.
    assert set(result.stderr.split("\n[...")[0]) <= {"é", "\ufffd"}


def test_small_output_is_not_marked_truncated(prefect_api_url: str) -> None:
    result = in_flow(python(f"print('y' * {OUTPUT_LIMIT - 1}, end='')"))
    assert result.stdout == "y" * (OUTPUT_LIMIT - 1)
    assert not result.stdout_truncated


def test_hostile_argument_arrives_as_one_literal_argument(
    prefect_api_url: str, tmp_path: Path
) -> None:
    marker, victim = tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    value = hostile(marker, victim)
    result = in_flow(python(PRINT_ARGV, value, "second", "", " spaced  out "))
    assert json.loads(result.stdout) == [value, "second", "", " spaced  out "]
    assert not marker.exists()
    assert victim.is_dir()


def test_environment_is_added_to_a_minimal_one_and_cwd_is_used(
    prefect_api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_OPERATOR_TOKEN", "operator-secret")
    code = "import os, json; print(json.dumps([os.getcwd(), dict(os.environ)]))"
    result = in_flow(python(code, env={"GREETING": "hi $(id)"}, cwd=str(tmp_path)))
    cwd, env = json.loads(result.stdout)
    assert cwd == str(tmp_path)
    assert env["GREETING"] == "hi $(id)"
    assert "RESPONDER_OPERATOR_TOKEN" not in env
    assert "operator-secret" not in result.stdout


def test_same_command_twice_in_a_flow_runs_twice(prefect_api_url: str, tmp_path: Path) -> None:
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )

    log = tmp_path / "ran"
    params = python("import sys; open(sys.argv[1], 'a').write('ran\\n')", str(log))

    @flow
    def twice() -> None:
        command_run(params)
        command_run(params)

    # With persisted results, Prefect's default cache policy would skip the second run.
    settings = {PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_LOCAL_STORAGE_PATH: tmp_path}
    with temporary_settings(settings):
        twice()
    assert log.read_text() == "ran\nran\n"


def test_task_run_is_named_after_the_program_only(prefect_api_url: str) -> None:
    from prefect.client.orchestration import get_client

    @flow
    def submit() -> str:
        future = command_run.submit(python("print('x')", "a-long-argument"))
        future.wait()
        return str(future.task_run_id)

    run_id = submit()
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30
        while True:  # task runs reach the server through events, a moment later
            try:
                name = client.read_task_run(UUID(run_id)).name
                break
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    assert name == Path(sys.executable).name


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"argv": []}, "at least 1 item"),
        ({"argv": ["echo", "a\x00b"]}, "NUL byte"),
        ({"argv": ["/bin/echo\x00x"]}, "NUL byte"),
        ({"argv": ["./script"]}, "absolute path or a bare program name"),
        ({"argv": ["bin/sh"]}, "absolute path or a bare program name"),
        ({"argv": ["-rf"]}, "absolute path or a bare program name"),
        ({"argv": ["/usr/bin/../bin/sh"]}, "normalised absolute path"),
        ({"argv": ["echo"], "env": {"lower": "x"}}, "should match pattern"),
        ({"argv": ["echo"], "env": {"A-B": "x"}}, "should match pattern"),
        ({"argv": ["echo"], "env": {"OK": "a\x00b"}}, "NUL byte"),
        ({"argv": ["echo"], "cwd": "relative/dir"}, "absolute path"),
        ({"argv": ["echo"], "timeout_seconds": 0}, "greater than 0"),
        ({"argv": ["echo"], "timeout_seconds": 3601}, "less than or equal to 3600"),
        ({"argv": ["echo"], "expected_exit_codes": []}, "at least 1 item"),
        ({"argv": ["echo"], "shell": True}, "Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(
    params: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        CommandRun.model_validate(params)
    # Through the registry, as a YAML flow calls it: refused before the task starts.
    with pytest.raises(ValidationError, match=needle):
        OPERATIONS["command.run"](params)
