"""`ssh.run` for real: the system ssh client against a real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from pydantic import ValidationError

from flows.operations.command import CommandFailed, CommandResult
from flows.operations.ssh import SshRun, ssh_run
from tests.flows.operations.test_command import PRINT_ARGV, hostile
from tests.servers import Sshd, keygen, real_sshd

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 with its own host key, accepting one generated client key."""
    with real_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@flow(name="test-ssh-run")
def in_flow(params: SshRun) -> CommandResult:
    """Run the operation as a flow's task, as remediations do (its logs need a flow run)."""
    return ssh_run(params)


def test_runs_a_remote_command_and_returns_its_output(prefect_api_url: str, sshd: Sshd) -> None:
    code = (
        "import os, sys; print(os.environ['SSH_CONNECTION']); "
        "print('remote error', file=sys.stderr); sys.exit(4)"
    )
    result = in_flow(sshd.params([sys.executable, "-c", code], expected_exit_codes=[4]))
    assert result.exit_code == 4
    # Only a session that came through sshd has SSH_CONNECTION: "client port server port".
    assert result.stdout.split()[2:] == ["127.0.0.1", str(sshd.port)]
    assert result.stderr == "remote error\n"
    assert result.argv[0] == "ssh" and "StrictHostKeyChecking=yes" in result.argv


def test_unexpected_remote_exit_code_fails(prefect_api_url: str, sshd: Sshd) -> None:
    with pytest.raises(CommandFailed, match="exited 7; expected one of \\[0\\]: bad thing") as info:
        in_flow(sshd.params(["sh", "-c", "echo bad thing >&2; exit 7"]))
    assert info.value.result.exit_code == 7


def test_hostile_argument_arrives_as_one_literal_remote_argument(
    prefect_api_url: str, sshd: Sshd, tmp_path: Path
) -> None:
    marker, victim = tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    value = hostile(marker, victim)
    args = [value, "it's", 'say "hi"\nnext line', "", "*", "-rf"]
    result = in_flow(sshd.params([sys.executable, "-c", PRINT_ARGV, *args]))
    assert json.loads(result.stdout) == args
    assert not marker.exists()
    assert victim.is_dir()


def test_unknown_host_key_is_refused_by_default(
    prefect_api_url: str, sshd: Sshd, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    marker = tmp_path / "ran"
    params = sshd.params(["touch", str(marker)], known_hosts_file=str(empty))
    with pytest.raises(CommandFailed, match="Host key verification failed") as info:
        in_flow(params)
    assert info.value.result.exit_code == 255
    assert not marker.exists()
    assert empty.read_text() == ""


def test_a_changed_host_key_is_refused_even_without_strict_checking(
    prefect_api_url: str, sshd: Sshd, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    keygen(other)
    wrong = tmp_path / "known_hosts"
    key_type, key = (tmp_path / "other_key.pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {key}\n")
    marker = tmp_path / "ran"
    params = sshd.params(
        ["touch", str(marker)], known_hosts_file=str(wrong), strict_host_key_checking=False
    )
    with pytest.raises(CommandFailed, match="exited 255") as info:
        in_flow(params)
    assert "HOST IDENTIFICATION HAS CHANGED" in info.value.result.stderr
    assert not marker.exists()


def test_without_strict_checking_a_new_host_key_is_recorded(
    prefect_api_url: str, sshd: Sshd, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    params = sshd.params(
        ["echo", "hello"], known_hosts_file=str(known_hosts), strict_host_key_checking=False
    )
    assert in_flow(params).stdout == "hello\n"
    assert sshd.host_key_line.split()[2] in known_hosts.read_text()


def test_timeout_kills_the_client_and_is_reported(prefect_api_url: str, sshd: Sshd) -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after") as info:
        in_flow(sshd.params(["sleep", "8"], timeout_seconds=1.5))
    assert time.monotonic() - started < 7
    assert info.value.result.timed_out
    assert info.value.result.exit_code == -9


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"host": "-oProxyCommand=touch /tmp/x"}, "should match pattern"),
        ({"host": "host;rm"}, "should match pattern"),
        ({"host": "a b"}, "should match pattern"),
        ({"host": "$(id)"}, "should match pattern"),
        ({"host": ""}, "should match pattern|at least 1 character"),
        ({"user": "-oProxyCommand=x"}, "should match pattern"),
        ({"user": "root@evil"}, "should match pattern"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"port": 65536}, "less than or equal to 65535"),
        ({"argv": []}, "at least 1 item"),
        ({"argv": ["echo", "a\x00b"]}, "NUL byte"),
        ({"identity_file": "~/.ssh/id_ed25519"}, "should match pattern"),
        ({"known_hosts_file": "/tmp/a /etc/ssh/other"}, "should match pattern"),
        ({"known_hosts_file": "/tmp/%h"}, "should match pattern"),
        ({"expected_exit_codes": [0, 255]}, "255 is ssh's own failure"),
    ],
)
def test_bad_parameters_are_refused(overrides: dict[str, Any], needle: str) -> None:
    values: dict[str, Any] = {"host": "db1.example.com", "argv": ["true"], **overrides}
    with pytest.raises(ValidationError, match=needle):
        SshRun.model_validate(values)


def test_local_command_line_puts_options_before_the_destination() -> None:
    params = SshRun(host="db1.example.com", user="ops", port=2222, argv=["echo", "a b", "$x"])
    argv = params.ssh_argv()
    assert argv[-3:] == ["--", "ops@db1.example.com", "echo 'a b' '$x'"]
    assert argv[argv.index("-p") + 1] == "2222"
    assert "UserKnownHostsFile" not in " ".join(argv)  # ssh's own known_hosts by default
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
