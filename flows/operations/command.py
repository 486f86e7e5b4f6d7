"""`command.run`: run one program on the worker, as an argv list, never through a shell.

The plain functions here (`run_argv`, `check_exit`) are the one place that runs a program,
bounds its output and decides whether it succeeded; `ssh.run` uses them for the `ssh` client.
"""

from __future__ import annotations

import os
import posixpath
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any

from prefect import get_run_logger
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from flows.errors import FlowError
from flows.operations import operation

# Each of stdout and stderr keeps at most this many bytes: its first and its last half.
OUTPUT_LIMIT = 8192
# How much of each stream's end a failure writes to the run log.
LOG_TAIL = 2000
# Once the program is gone, how long to wait for pipes that something it started still holds.
DRAIN_SECONDS = 1.0
# The only variables a program inherits from the worker, whose environment also holds
# Responder's own credentials; `env` adds to these.
INHERITED_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "SSH_AUTH_SOCK")

_BARE_PROGRAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def _program_first(argv: list[str]) -> list[str]:
    program = argv[0]
    if program.startswith("/"):
        if posixpath.normpath(program) != program:
            raise ValueError(f"argv[0] {program!r} must be a normalised absolute path")
    elif not _BARE_PROGRAM.fullmatch(program):
        raise ValueError(
            f"argv[0] {program!r} must be an absolute path or a bare program name "
            "(letters, digits, '_', '.', '+', '-'; not starting with '-'), found in PATH"
        )
    return argv


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


# One argument: any text but NUL, which cannot cross exec(). Shell syntax in it is just text.
Arg = Annotated[str, AfterValidator(_no_nul)]
# A program and its arguments: argv[0] is an absolute path or a name looked up in PATH.
Argv = Annotated[list[Arg], Field(min_length=1), AfterValidator(_program_first)]
ExitCodes = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=1)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=3600)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")]
AbsolutePath = Annotated[str, AfterValidator(_no_nul), AfterValidator(_absolute)]


def program_name(argv: Sequence[str]) -> str:
    """The program's file name, without its directory (for run names and messages)."""
    return posixpath.basename(argv[0])


class CommandRun(BaseModel):
    """Parameters of the `command.run` operation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: Argv = Field(description="The program and its arguments; each one arrives verbatim.")
    timeout_seconds: TimeoutSeconds = Field(
        60.0, description="The program and everything it started are killed after this."
    )
    expected_exit_codes: ExitCodes = Field(default_factory=lambda: [0])
    env: dict[EnvName, Arg] = Field(
        default_factory=dict,
        description=f"Added to the few variables inherited from the worker "
        f"({', '.join(INHERITED_ENVIRONMENT)}).",
    )
    cwd: AbsolutePath | None = None

    @property
    def program(self) -> str:
        """The program's file name."""
        return program_name(self.argv)


class CommandResult(BaseModel):
    """What a program did: its exit code and its output, each stream cut to `OUTPUT_LIMIT`."""

    argv: list[str]
    exit_code: int = Field(description="Negative when a signal ended it, as -9 after a timeout.")
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_seconds: float
    timed_out: bool


class CommandFailed(FlowError):
    """A program exited with a code that was not expected, or ran out of time and was killed.

    `result` holds what it printed.
    """

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.result))


class _BoundedOutput:
    """The first and the last bytes of a stream, and how many were dropped in between."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.tail_limit
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> tuple[str, bool]:
        """The output as text (undecodable bytes replaced) and whether bytes were dropped."""
        if not self.dropped:
            return (self.head + self.tail).decode("utf-8", "replace"), False
        marker = f"\n[... {self.dropped} bytes cut ...]\n"
        head, tail = self.head.decode("utf-8", "replace"), self.tail.decode("utf-8", "replace")
        return head + marker + tail, True


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a program gets: `INHERITED_ENVIRONMENT` from the worker, plus `extra`."""
    env = {name: os.environ[name] for name in INHERITED_ENVIRONMENT if name in os.environ}
    env.update(extra or {})
    return env


def run_argv(
    argv: Sequence[str],
    *,
    timeout_seconds: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    limit: int = OUTPUT_LIMIT,
) -> CommandResult:
    """Run a program without a shell and return what it did; never raises for its exit code.

    The program gets no stdin and its own session (process group). When `timeout_seconds`
    pass, the whole group gets SIGKILL, so children it started die with it. Output is read as
    it comes, keeping at most `limit` bytes of each stream (its head and its tail).
    """
    started = time.monotonic()
    process = subprocess.Popen(
        list(argv),
        shell=False,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(env),
        cwd=cwd,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = _BoundedOutput(limit), _BoundedOutput(limit)
    try:
        timed_out = _pump(
            process,
            {process.stdout.fileno(): stdout, process.stderr.fileno(): stderr},
            started + timeout_seconds,
        )
        exit_code = process.wait()
    finally:
        if process.returncode is None:  # interrupted while it ran: leave nothing behind
            _kill_group(process)
            process.wait()
        process.stdout.close()
        process.stderr.close()
    out, out_cut = stdout.text()
    err, err_cut = stderr.text()
    return CommandResult(
        argv=list(argv),
        exit_code=exit_code,
        stdout=out,
        stderr=err,
        stdout_truncated=out_cut,
        stderr_truncated=err_cut,
        duration_seconds=round(time.monotonic() - started, 3),
        timed_out=timed_out,
    )


def _pump(
    process: subprocess.Popen[bytes], outputs: dict[int, _BoundedOutput], deadline: float
) -> bool:
    """Read the pipes until they close; kill the process group at `deadline` (returns True).

    A program that exits while something it left in the background still holds its pipes
    gets `DRAIN_SECONDS` more reading, then is considered done.
    """
    timed_out = False
    stop_at: float | None = None  # set once the program has exited or been killed
    with selectors.DefaultSelector() as selector:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if stop_at is None and process.poll() is not None:
                stop_at = now + DRAIN_SECONDS
            elif stop_at is None and now >= deadline:
                timed_out = True
                _kill_group(process)
                stop_at = now + DRAIN_SECONDS
            elif stop_at is not None and now >= stop_at:
                break
            # Wake up now and then to notice the exit of a program whose pipes stay open.
            wait = min(max((stop_at or deadline) - now, 0.0), 0.1)
            for key, _ in selector.select(timeout=wait):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    outputs[key.fd].add(chunk)
                else:
                    selector.unregister(key.fd)
    return timed_out


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's whole process group (its pid: it leads its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_exit(result: CommandResult, expected: Collection[int], what: str) -> CommandResult:
    """Return `result` if the program exited with an expected code, else log and raise.

    On failure the end of its stdout and stderr goes to the run log first, then
    `CommandFailed` is raised, naming `what` and the last line of stderr.
    """
    logger = get_run_logger()
    if not result.timed_out and result.exit_code in expected:
        logger.info("%s exited %d in %.2fs", what, result.exit_code, result.duration_seconds)
        return result
    logger.error(
        "%s failed (exit code %d%s) after %.2fs\n"
        "--- stdout (end) ---\n%s\n--- stderr (end) ---\n%s",
        what,
        result.exit_code,
        ", timed out" if result.timed_out else "",
        result.duration_seconds,
        result.stdout[-LOG_TAIL:],
        result.stderr[-LOG_TAIL:],
    )
    if result.timed_out:
        message = f"{what} timed out after {result.duration_seconds:.1f}s and was killed"
    else:
        message = f"{what} exited {result.exit_code}; expected one of {sorted(expected)}"
    last_line = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "")
    if last_line:
        message += f": {last_line.strip()[:300]}"
    raise CommandFailed(message, result)


@operation("command.run", risk="high", tags=["host", "command"], run_name="{params.program}")
def command_run(params: CommandRun) -> CommandResult:
    """Run one program on the worker, without a shell; fail unless it exits as expected.

    Each argv element reaches the program as one argument, whatever it contains, because no
    shell parses it. The program gets no stdin, only the listed environment, and its own
    process group, killed as a whole at the timeout. Not retried and never cached: running a
    command twice is not the same as running it once.
    """
    result = run_argv(
        params.argv, timeout_seconds=params.timeout_seconds, env=params.env, cwd=params.cwd
    )
    return check_exit(result, params.expected_exit_codes, f"command {params.program}")
