"""`ssh.run`: run one command on a host with the system OpenSSH client.

The local side runs `ssh` itself as an argv list through `command.run_argv`, so no local
shell is involved. The remote side cannot avoid one: sshd always hands the command line to
the remote user's login shell (`$SHELL -c '<command>'`). So every element of `argv` is quoted
with `shlex.quote` and the quoted elements are joined by spaces; a POSIX shell (sh, bash,
dash, zsh) then turns that line back into exactly the original elements, each ONE literal
argument: `$(...)`, backquotes, `;`, `|`, globs and templates inside them are never run.
A user whose login shell is not POSIX (csh, fish) would not get this guarantee.
"""

from __future__ import annotations

import shlex
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from flows.operations import operation
from flows.operations.command import (
    Argv,
    CommandResult,
    ExitCodes,
    TimeoutSeconds,
    check_exit,
    program_name,
    run_argv,
)
from flows.types import Hostname

# ssh exits 255 when it fails itself (connection, authentication, host key).
SSH_ERROR = 255
UserName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
# ssh expands `~` and `%` tokens in these paths and splits them at spaces: allow none of them.
SshPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._/@+-]{1,4095}$")]


class SshRun(BaseModel):
    """Parameters of the `ssh.run` operation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: Hostname = Field(description="A DNS name or an IPv4 address; never option syntax.")
    user: UserName | None = Field(None, description="None: ssh's default (ssh_config, or ours).")
    port: int = Field(22, ge=1, le=65535)
    argv: Argv = Field(description="The remote program and its arguments, each sent verbatim.")
    timeout_seconds: TimeoutSeconds = Field(
        60.0, description="The local ssh client is killed after this, connecting included."
    )
    connect_timeout_seconds: int = Field(10, ge=1, le=300)
    expected_exit_codes: ExitCodes = Field(default_factory=lambda: [0])
    identity_file: SshPath | None = Field(None, description="A private key; only it is offered.")
    known_hosts_file: SshPath | None = Field(
        None, description="Host keys to trust instead of ~/.ssh/known_hosts."
    )
    strict_host_key_checking: bool = Field(
        True,
        description="True: refuse hosts whose key is not known. False: accept and record the "
        "key of a host seen for the first time (accept-new); a changed key is always refused.",
    )

    @field_validator("expected_exit_codes")
    @classmethod
    def _not_ssh_error(cls, codes: list[int]) -> list[int]:
        if SSH_ERROR in codes:
            raise ValueError(f"{SSH_ERROR} is ssh's own failure and cannot be expected")
        return codes

    @property
    def program(self) -> str:
        """The remote program's file name."""
        return program_name(self.argv)

    @property
    def destination(self) -> str:
        """`user@host`, or `host` for ssh's default user."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def remote_command(self) -> str:
        """The command line for the remote shell: each argv element quoted as one word."""
        return " ".join(shlex.quote(arg) for arg in self.argv)

    def ssh_argv(self) -> list[str]:
        """The local `ssh` invocation: options, `--`, the destination, the remote command."""
        if self.destination.startswith("-"):  # Hostname and UserName already exclude this
            raise ValueError(f"destination {self.destination!r} would be read as an option")
        checking = "yes" if self.strict_host_key_checking else "accept-new"
        argv = [
            "ssh",
            "-T",  # no terminal
            "-a",  # no agent forwarding
            "-x",  # no X11 forwarding
            "-o", "BatchMode=yes",  # never prompt: fail instead
            "-o", f"StrictHostKeyChecking={checking}",
            "-o", f"ConnectTimeout={self.connect_timeout_seconds}",
            "-o", "ClearAllForwardings=yes",
            "-p", str(self.port),
        ]  # fmt: skip
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts_file:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        return [*argv, "--", self.destination, self.remote_command]


@operation(
    "ssh.run",
    risk="high",
    tags=["host", "ssh"],
    run_name="{params.program} on {params.host}",
)
def ssh_run(params: SshRun) -> CommandResult:
    """Run one command on a host over ssh; fail unless it exits as expected.

    Uses the system `ssh` client in batch mode (no prompts), with host-key checking on by
    default, no terminal and no forwarding. Each argv element reaches the remote program as
    one literal argument (see the module docstring: the remote login shell must be POSIX).
    Exit code 255 means ssh itself failed (unreachable, refused key, unknown host key) and
    always fails the step. At the timeout the local client is killed; a remote command that
    does not read or write may keep running on the host. Not retried and never cached.

    The result's `argv` is the local `ssh` command line that ran.
    """
    result = run_argv(params.ssh_argv(), timeout_seconds=params.timeout_seconds)
    return check_exit(
        result, params.expected_exit_codes, f"ssh {params.destination}: {params.program}"
    )
