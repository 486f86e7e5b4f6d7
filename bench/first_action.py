"""Webhook → the flow's first call to its target, on the embedded default (`responder up`).

Starts the real `responder up` (its own Prefect server on SQLite, the flow runner, the
webhook receiver) in a temporary directory, with one rule that runs `restart-service` against
a loopback HTTP target (`DemoService`) which records when each restart arrives. Then:

- **one incident**, `--repeat` times, one after the other: a webhook of one firing alert, and
  the time until the target receives that incident's restart call;
- **a burst**: one webhook of `--burst` alerts (distinct hosts), and the time until the
  target has received every restart; then every run must be visible in Prefect's API (what
  the UI shows) and reach COMPLETED.

Alertmanager's own grouping delay (`group_wait`) is not included: the webhook is posted
directly, as Alertmanager would post it.

    python bench/first_action.py --repeat 20 --burst 50
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import _free_port, _pct  # noqa: E402
from responder.authoring.demo import DemoService  # noqa: E402

RULE = """\
rules:
  - name: bench-restart
    match: ['alertname="BenchServiceDown"']
    run:
      flow: restart-service
      parameters:
        host: "{{ alert.labels.instance }}"
        service: "{{ alert.labels.service }}"
        restart_url: "{{ vars.target }}/restart/{{ alert.labels.instance | segment }}/web"
        health_url: "{{ vars.target }}/health/{{ alert.labels.instance | segment }}/web"
        verify_every_seconds: 0.2
    guard:
      key: "bench/{{ alert.labels.instance }}"
      mutex: ["host:{{ alert.host }}"]
      budget: {max_starts: 100000, per: 10m}
"""


class TimedRestarts(list[tuple[str, str]]):
    """`DemoService.restarts` that also notes when each restart arrived (wall clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    def append(self, item: tuple[str, str]) -> None:
        self.at.setdefault(item[0], time.time())
        super().append(item)


def alert(host: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "BenchServiceDown", "instance": host, "service": "web"},
        "annotations": {},
        "startsAt": "2026-12-04T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{abs(hash(host)):016x}",
    }


def webhook(hosts: list[str]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="BenchServiceDown"}',
            "status": "firing",
            "receiver": "responder",
            "groupLabels": {"alertname": "BenchServiceDown"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [alert(h) for h in hosts],
        }
    ).encode()


def post(http: httpx.Client, url: str, hosts: list[str]) -> None:
    response = http.post(
        f"{url}/webhook/alertmanager",
        content=webhook(hosts),
        headers={"content-type": "application/json"},
    )
    response.raise_for_status()


class Up:
    """`responder up` in a child process group, in a directory of its own."""

    def __init__(
        self, workdir: Path, target: str, runner_limit: int | None, prefect_database: str | None
    ) -> None:
        (workdir / "rules").mkdir()
        (workdir / "rules" / "bench.yaml").write_text(RULE)
        self.port = _free_port()
        self.prefect_port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefect = f"http://127.0.0.1:{self.prefect_port}/api"
        env = {
            **os.environ,
            "RESPONDER_DATA_DIR": str(workdir / "data"),
            "RESPONDER_RULES_DIR": str(workdir / "rules"),
            "RESPONDER_SERVICES_FILE": str(workdir / "none.yaml"),
            "RESPONDER_RELOAD_CHECK_SECONDS": "0",
            "RESPONDER_RULE_VARS": json.dumps({"target": target}),
            "RESPONDER_PORT": str(self.port),
            "RESPONDER_PREFECT_PORT": str(self.prefect_port),
        }
        if runner_limit:
            env["RESPONDER_RUNNER_LIMIT"] = str(runner_limit)
        if prefect_database:  # the Prefect server `up` starts keeps its runs there
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_database
        for name in ("PREFECT_API_URL", "PREFECT_HOME"):
            env.pop(name, None)
        self.log = workdir / "up.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "responder", "up"],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"responder up exited; see {self.log}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                deployed = (
                    httpx.get(
                        f"{self.prefect}/deployments/name/restart-service/restart-service",
                        timeout=2,
                    ).status_code
                    == 200
                )
                if ready and deployed:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"responder up not ready within {timeout}s; see {self.log}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


def tree_cpu_seconds(root: int) -> dict[str, float]:
    """CPU time of a process tree by the root's children (the Prefect server, the flow runner
    with its runs) and the root itself (Responder): every live process, with its reaped
    children (a flow run's process is reaped by the fork server, which lives on)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def branch(pid: int) -> str | None:
        """Which part of the tree `pid` belongs to, if any."""
        while pid > 1:
            parent = parents.get(pid, 1)
            if pid == root:
                return "responder"
            if parent == root:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                return "flow_runner" if b"serve-flows" in command else "prefect_server"
            pid = parent
        return None

    split: dict[str, float] = {}
    for pid, seconds in cpu.items():
        with contextlib.suppress(OSError):
            if (part := branch(pid)) is not None:
                split[part] = split.get(part, 0.0) + seconds
    return split


def busy_retries(http: httpx.Client, url: str) -> int:
    """`responder_prefect_busy_retries_total`, from Responder's metrics."""
    for line in http.get(f"{url}/metrics").text.splitlines():
        if line.startswith("responder_prefect_busy_retries_total "):
            return int(float(line.split()[1]))
    raise RuntimeError("no responder_prefect_busy_retries_total in /metrics")


def wait_for_restarts(restarts: TimedRestarts, hosts: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(h in restarts.at for h in hosts):
        if time.monotonic() > deadline:
            missing = [h for h in hosts if h not in restarts.at]
            raise RuntimeError(f"no restart within {timeout}s for {len(missing)} hosts")
        time.sleep(0.005)


def runs(prefect: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{prefect}/flow_runs/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return list(response.json())


def wait_completed(prefect: str, count: int, timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = runs(prefect)
        done = [r for r in found if r["state_type"] == "COMPLETED"]
        if len(done) >= count:
            return found
        if time.monotonic() > deadline:
            states = sorted(r["state_type"] for r in found)
            raise RuntimeError(f"{len(done)}/{count} runs completed: {states}")
        time.sleep(1)


def phases(prefect: str, run: dict[str, Any], sent: float, called: float) -> list[float]:
    """webhook → run created → PENDING (the runner took it) → RUNNING (its process started)
    → the call, in seconds."""
    states = httpx.get(
        f"{prefect}/flow_run_states/", params={"flow_run_id": run["id"]}, timeout=30
    ).json()
    at = {s["type"]: _stamp(s["timestamp"]) for s in states}
    marks = [sent, _stamp(run["created"]), at["PENDING"], at["RUNNING"], called]
    return [round(b - a, 3) for a, b in itertools.pairwise(marks)]


def _stamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def incidents(up: Up, restarts: TimedRestarts, repeat: int, burst: int) -> dict[str, Any]:
    """Single incidents one by one, then the burst; the webhook → call latencies."""
    sent_at: dict[str, float] = {}
    with httpx.Client(timeout=30) as http:
        for i in range(repeat + 1):  # the first warms the server up: not counted
            host = f"one-{i}"
            sent_at[host] = time.time()
            post(http, up.url, [host])
            wait_for_restarts(restarts, [host], 60)
            time.sleep(1.0)
        hosts = [f"burst-{i}" for i in range(burst)]
        cpu = tree_cpu_seconds(up.process.pid)
        busy = busy_retries(http, up.url)
        sent = time.time()
        post(http, up.url, hosts)
        wait_for_restarts(restarts, hosts, 180)
        found = wait_completed(up.prefect, repeat + 1 + burst)
        after = tree_cpu_seconds(up.process.pid)
        busy = busy_retries(http, up.url) - busy
    one = [restarts.at[h] - sent_at[h] for h in list(sent_at)[1:]]
    latency = sorted(restarts.at[h] - sent for h in hosts)
    by_host = {r["parameters"]["host"]: r for r in found}
    split = [phases(up.prefect, by_host[h], sent_at[h], restarts.at[h]) for h in list(sent_at)[1:]]
    burst_split = [phases(up.prefect, by_host[h], sent, restarts.at[h]) for h in hosts]
    return {
        "one_p50_s": round(statistics.median(one), 3),
        "one_p99_s": round(_pct(one, 0.99), 3),
        "one_max_s": round(max(one), 3),
        # webhook→created, created→PENDING, PENDING→RUNNING, RUNNING→call: medians
        "one_phases_p50_s": [round(statistics.median(p), 3) for p in zip(*split, strict=True)],
        "burst": burst,
        "burst_first_s": round(latency[0], 2),
        "burst_p50_s": round(statistics.median(latency), 2),
        "burst_all_s": round(latency[-1], 2),
        # the same phases in the burst: median and longest of each
        "burst_phases_p50_s": [
            round(statistics.median(p), 2) for p in zip(*burst_split, strict=True)
        ],
        "burst_phases_max_s": [round(max(p), 2) for p in zip(*burst_split, strict=True)],
        # Responder, Prefect's server, the runner and the runs, until every run completed
        "burst_cpu_s_per_run": round((sum(after.values()) - sum(cpu.values())) / burst, 2),
        "burst_cpu_s_per_run_by_part": {
            part: round((after[part] - cpu.get(part, 0.0)) / burst, 2) for part in after
        },
        # Prefect's busy answers (503) the dispatcher asked again: its database's contention
        "burst_busy_retries": busy,
        "runs_in_prefect": len(found),
        "runs_completed": sum(r["state_type"] == "COMPLETED" for r in found),
    }


def run(
    repeat: int, burst: int, runner_limit: int | None, prefect_database: str | None = None
) -> dict[str, Any]:
    restarts = TimedRestarts()
    target = DemoService()
    target.restarts = restarts
    target.start()
    tmp = tempfile.mkdtemp(prefix="bench-first-action-")
    up = Up(Path(tmp), target.url, runner_limit, prefect_database)
    try:
        up.wait_ready()
        result = incidents(up, restarts, repeat, burst)
    finally:
        up.stop()
        target.stop()
    shutil.rmtree(tmp)  # kept, with its logs, if the run failed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="single incidents, one by one")
    parser.add_argument("--burst", type=int, default=50, help="incidents in one webhook")
    parser.add_argument("--runner-limit", type=int, help="RESPONDER_RUNNER_LIMIT (default: its)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("RESPONDER_BENCH_POSTGRES_URL"),
        help="also run with the Prefect server on this PostgreSQL server (a fresh database)",
    )
    args = parser.parse_args()
    result = run(args.repeat, args.burst, args.runner_limit)
    print(json.dumps({"prefect_database": "sqlite", **result}), flush=True)
    if args.postgres:
        with fresh_database(args.postgres, "responder_bench_prefect") as url:
            result = run(args.repeat, args.burst, args.runner_limit, url)
        print(json.dumps({"prefect_database": "postgresql", **result}), flush=True)


@contextlib.contextmanager
def fresh_database(server_url: str, name: str) -> Iterator[str]:
    """An empty database `name` on the PostgreSQL server of `server_url` (an asyncpg URL),
    dropped afterwards; its URL. (The tests use it too: `tests.helpers.postgres_database`.)"""
    import asyncio

    import asyncpg

    async def execute(statement: str) -> None:
        conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    quoted = '"' + name.replace('"', '""') + '"'
    asyncio.run(execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    asyncio.run(execute(f"CREATE DATABASE {quoted}"))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))


if __name__ == "__main__":
    main()
