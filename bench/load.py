"""Load test of a running Responder: realistic Alertmanager webhooks over real HTTP.

Starts `responder serve` (uvicorn, the real app, a SQLite file or PostgreSQL) with generated
rules and no Prefect (nothing is dispatched), then drives it from an asyncio load generator
on 127.0.0.1, bounded in count and time (the storm's senders keep one connection each and
cost about 0.006 CPU-s per 1,000 alerts, `bench/keepalive.py`; `--client httpx` for the
figures before 2026-12-05, whose senders took more CPU than the server):

- **storm:** N alerts over 2,000 instances from 16 concurrent senders, as fast as it takes;
- **steady:** a fixed rate (100 alerts/s) for a fixed time, one alert per webhook;
- **big:** one webhook of N alerts (5,000: under the default 1 MiB body limit), while probes
  (one alert each, every 20 ms) keep arriving until all are decided: the probes' latency and
  how many were refused (503) say whether the engine blocks intake;

Webhooks carry groups of 1 or 20 alerts: 10 % match a remediation rule, 60 % other rules'
names, 30 % noise; 90 % firing. Like Alertmanager, groups are resent unchanged, and resolved
alerts linger in later groups (stale). It measures alerts/s accepted (answered 200) and fully
decided (a decision recorded for every alert sent), the webhook response time, POST → decision
recorded, and the server's RSS and CPU; it checks that every alert sent has a decision and that
no guard key was admitted twice.

    python bench/load.py storm --alerts 100000 --rules 200
    python bench/load.py steady --rate 100 --seconds 60
    python bench/load.py big --alerts 5000 --rules 200 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision_path import _reset, rule_text  # noqa: E402
from bench.events import event_rule_text  # noqa: E402
from bench.keepalive import KeepAlive  # noqa: E402
from responder.storage.schema import decisions  # noqa: E402
from responder.storage.store import Store  # noqa: E402

INSTANCES = 2000
STARTS_AT = "2026-11-26T10:00:00Z"


@dataclass
class Sender:
    """Builds webhooks the way Alertmanager sends them, and remembers what it sent."""

    rules: int
    seed: int = 7
    sent_alerts: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)  # fingerprint → first send
    _next: int = 0
    _recent: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def alert(self) -> dict[str, Any]:
        n = self._next
        self._next += 1
        kind = n % 10
        if kind == 0:
            name = f"Alert{n % self.rules}"  # a remediation rule matches
        elif kind < 7:
            name = f"Other{n % 50}"  # another rule's alertname, no remediation
        else:
            name = "Noise"
        firing = self.random.random() < 0.9
        return {
            "status": "firing" if firing else "resolved",
            "labels": {
                "alertname": name,
                "instance": f"host-{n % INSTANCES}",
                "severity": "critical",
                "n": str(n),
            },
            "annotations": {"summary": "load test"},
            "startsAt": STARTS_AT,
            "endsAt": "0001-01-01T00:00:00Z" if firing else "2026-11-26T10:05:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": f"{n:016x}",
        }

    def webhook(self, size: int) -> tuple[bytes, int]:
        """A group of `size` new alerts, sometimes with a stale resolved one from before."""
        group = [self.alert() for _ in range(size)]
        if size > 1 and self._recent and self.random.random() < 0.2:
            stale = dict(self.random.choice(self._recent), status="resolved")
            stale["endsAt"] = "2026-11-26T10:01:00Z"
            group.append(stale)
        self._recent = group[-20:]
        body = {
            "version": "4",
            "groupKey": '{}:{alertname="' + group[0]["labels"]["alertname"] + '"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "responder",
            "groupLabels": {"alertname": group[0]["labels"]["alertname"]},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": group,
        }
        now = time.perf_counter()
        for alert in group:
            self.sent_at.setdefault(alert["fingerprint"], now)
        return json.dumps(body).encode(), len(group)


class Server:
    """`responder serve` in a child process, with its own data directory and rules."""

    def __init__(
        self,
        workdir: Path,
        rules: int,
        database_url: str | None,
        prefect_api_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        event_rules: int = 0,
    ) -> None:
        (workdir / "rules").mkdir(parents=True, exist_ok=True)  # a restart reuses it all
        text = rule_text(rules) + event_rule_text(event_rules)  # rules on events: none fire
        (workdir / "rules" / "bench.yaml").write_text(text)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "RESPONDER_DATA_DIR": str(workdir / "data"),
            "RESPONDER_RULES_DIR": str(workdir / "rules"),
            "RESPONDER_SERVICES_FILE": str(workdir / "none.yaml"),
            "RESPONDER_RELOAD_CHECK_SECONDS": "0",
            "RESPONDER_ENGINE_IDLE_SECONDS": "0.005",
            # Every sender is 127.0.0.1: one client, whose rate is the thing measured.
            "RESPONDER_RATE_LIMIT_PER_CLIENT": "0",
        }
        env.pop("PREFECT_API_URL", None)
        if prefect_api_url:  # else nothing is dispatched
            env["RESPONDER_PREFECT_API_URL"] = prefect_api_url
        if database_url:
            env["RESPONDER_DATABASE_URL"] = database_url
        env.update(extra_env or {})
        self.database_url = (
            database_url or f"sqlite+aiosqlite:///{workdir / 'data' / 'responder.db'}"
        )
        self.started = time.perf_counter()
        self.log = workdir / "server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "responder", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> float:
        async with httpx.AsyncClient() as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"responder serve exited; see {self.log}")
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def _recorded(store: Store) -> int:
    async with store.transaction() as conn:
        return int(await conn.scalar(select(func.count()).select_from(decisions)) or 0)


async def _check(store: Store, sent: int) -> dict[str, Any]:
    """Every alert sent has a decision; no guard key was admitted twice."""
    async with store.transaction() as conn:
        twice = await conn.scalar(
            select(func.count()).select_from(
                select(decisions.c.guard_key)
                .where(decisions.c.verdict == "admitted")
                .group_by(decisions.c.guard_key)
                .having(func.count() > 1)
                .subquery()
            )
        )
        admitted = await conn.scalar(
            select(func.count()).select_from(decisions).where(decisions.c.verdict == "admitted")
        )
    recorded = await _recorded(store)
    return {
        "recorded": recorded,
        "all_decided": recorded == sent,
        "keys_admitted_twice": twice,
        "admitted": admitted,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def storm(
    server: Server, rules: int, alerts: int, senders: int, client: str = "lean"
) -> dict[str, Any]:
    sender = Sender(rules)
    work: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
    queued = 0
    while queued < alerts:
        size = 20 if sender.random.random() < 0.7 else 1
        body, count = sender.webhook(min(size, alerts - queued))
        queued += count
        work.put_nowait((body, count))
        if sender.random.random() < 0.1:  # Alertmanager resends an unchanged group
            work.put_nowait((body, count))
            queued += count
    response_times: list[float] = []
    accepted = 0

    async def send(post: Callable[[bytes], Awaitable[tuple[int, object]]]) -> None:
        """Post queued webhooks until none is left, each answer checked and timed."""
        nonlocal accepted
        while not work.empty():
            body, count = work.get_nowait()
            began = time.perf_counter()
            status, answer = await post(body)
            response_times.append(time.perf_counter() - began)
            assert status == 200, answer
            accepted += count

    async def send_httpx(http: httpx.AsyncClient) -> None:
        async def post(body: bytes) -> tuple[int, object]:
            response = await http.post(
                f"{server.url}/webhook/alertmanager",
                content=body,
                headers={"content-type": "application/json"},
            )
            return response.status_code, response.text

        await send(post)

    async def send_lean() -> None:
        connection = KeepAlive("127.0.0.1", server.port)
        try:
            await send(
                lambda body: connection.post("/webhook/alertmanager", body, "application/json")
            )
        finally:
            await connection.close()

    store = Store(server.database_url)
    cpu_before = server.cpu_seconds()
    client_cpu_before = time.process_time()
    began = time.perf_counter()
    peak_rss = server.rss_mb()
    limits = httpx.Limits(max_connections=senders)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        if client == "httpx":
            sending = asyncio.gather(*(send_httpx(http) for _ in range(senders)))
        else:
            sending = asyncio.gather(*(send_lean() for _ in range(senders)))
        while not sending.done():
            peak_rss = max(peak_rss, server.rss_mb())
            await asyncio.sleep(0.2)
        await sending
    accepted_s = time.perf_counter() - began
    client_cpu_s = time.process_time() - client_cpu_before
    deadline = time.monotonic() + 900
    while await _recorded(store) < accepted and time.monotonic() < deadline:
        peak_rss = max(peak_rss, server.rss_mb())
        await asyncio.sleep(0.2)
    decided_s = time.perf_counter() - began
    checks = await _check(store, accepted)
    await store.close()
    return {
        "scenario": "storm",
        "rules": rules,
        "alerts": accepted,
        "senders": senders,
        "client": client,
        "accepted_per_s": accepted / accepted_s,
        "decided_per_s": accepted / decided_s,
        "response_p50_ms": 1000 * _pct(response_times, 0.5),
        "response_p99_ms": 1000 * _pct(response_times, 0.99),
        "peak_rss_mb": peak_rss,
        "cpu_s": server.cpu_seconds() - cpu_before,
        "senders_cpu_s": client_cpu_s,
        **checks,
    }


async def steady(server: Server, rules: int, rate: float, seconds: float) -> dict[str, Any]:
    """One alert per webhook at `rate` per second; latency from POST to decision recorded."""
    sender = Sender(rules)
    store = Store(server.database_url)
    response_times: list[float] = []
    sent: list[tuple[str, float]] = []
    clock_offset = time.time() - time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as http:
        began = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            due = began + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            body, _ = sender.webhook(1)
            fingerprint = json.loads(body)["alerts"][0]["fingerprint"]
            posted = time.perf_counter()
            response = await http.post(
                f"{server.url}/webhook/alertmanager",
                content=body,
                headers={"content-type": "application/json"},
            )
            response_times.append(time.perf_counter() - posted)
            assert response.status_code == 200
            sent.append((fingerprint, posted + clock_offset))
    deadline = time.monotonic() + 60
    while await _recorded(store) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    async with store.transaction() as conn:
        rows = await conn.execute(select(decisions.c.incident, decisions.c.created_at))
        recorded_at = {r.incident.split("@")[0]: r.created_at for r in rows}
    latencies = [recorded_at[f] - at for f, at in sent if f in recorded_at]
    checks = await _check(store, len(sent))
    await store.close()
    return {
        "scenario": "steady",
        "rules": rules,
        "alerts": len(sent),
        "rate": rate,
        "decision_p50_ms": 1000 * _pct(latencies, 0.5),
        "decision_p99_ms": 1000 * _pct(latencies, 0.99),
        "response_p50_ms": 1000 * _pct(response_times, 0.5),
        "response_p99_ms": 1000 * _pct(response_times, 0.99),
        "rss_mb": server.rss_mb(),
        **checks,
    }


async def big(server: Server, rules: int, alerts: int) -> dict[str, Any]:
    """One webhook of `alerts` alerts, then one-alert probes every 20 ms until all decided."""
    sender = Sender(rules)
    body = json.loads(sender.webhook(alerts)[0])
    body["alerts"] = [  # the optional fields left out, as a big group might
        {k: v for k, v in a.items() if k not in ("annotations", "generatorURL", "endsAt")}
        for a in body["alerts"]
    ]
    big_body = json.dumps(body, separators=(",", ":")).encode()
    sent = len(body["alerts"])
    store = Store(server.database_url)
    probe_times: list[float] = []
    refused = 0
    peak_rss = server.rss_mb()
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as http:
        began = time.perf_counter()
        response = await http.post(
            f"{server.url}/webhook/alertmanager", content=big_body, headers=headers
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 900
        while await _recorded(store) < sent and time.monotonic() < deadline:
            probe, count = sender.webhook(1)
            posted = time.perf_counter()
            response = await http.post(
                f"{server.url}/webhook/alertmanager", content=probe, headers=headers
            )
            probe_times.append(time.perf_counter() - posted)
            if response.status_code == 200:
                sent += count
            else:
                refused += 1
            peak_rss = max(peak_rss, server.rss_mb())
            await asyncio.sleep(0.02)
        while await _recorded(store) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    decided_s = time.perf_counter() - began
    checks = await _check(store, sent)
    await store.close()
    return {
        "scenario": "big",
        "rules": rules,
        "alerts": alerts,
        "body_bytes": len(big_body),
        "decided_s": decided_s,
        "probes": len(probe_times),
        "probes_refused": refused,
        "probe_p50_ms": 1000 * _pct(probe_times, 0.5),
        "probe_p99_ms": 1000 * _pct(probe_times, 0.99),
        "probe_max_ms": 1000 * max(probe_times, default=0.0),
        "peak_rss_mb": peak_rss,
        **checks,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    # With several --event-rules counts, their runs alternate: the machine's drift hits each.
    runs = [(r, e) for r in args.rules for _ in range(args.repeat) for e in args.event_rules]
    for rules, event_rules in runs:
        with tempfile.TemporaryDirectory(prefix="responder-load-") as tmp:
            if args.postgres:
                await _reset(args.postgres)
            server = Server(Path(tmp), rules, args.postgres, event_rules=event_rules)
            try:
                ready = await server.wait_ready()
                idle_rss = server.rss_mb()
                if args.scenario == "storm":
                    result = await storm(server, rules, args.alerts, args.senders, args.client)
                elif args.scenario == "big":
                    result = await big(server, rules, args.alerts)
                else:
                    result = await steady(server, rules, args.rate, args.seconds)
            finally:
                server.stop()
            result |= {
                "event_rules": event_rules,
                "ready_s": ready,
                "idle_rss_mb": idle_rss,
                "store": "postgresql" if args.postgres else "sqlite",
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


COLUMNS = {
    "storm": [
        ("accepted_per_s", "accepted/s"),
        ("decided_per_s", "decided/s"),
        ("response_p50_ms", "webhook p50 ms"),
        ("response_p99_ms", "webhook p99 ms"),
        ("peak_rss_mb", "peak RSS MB"),
        ("ready_s", "ready s"),
    ],
    "steady": [
        ("decision_p50_ms", "decision p50 ms"),
        ("decision_p99_ms", "decision p99 ms"),
        ("response_p50_ms", "webhook p50 ms"),
        ("response_p99_ms", "webhook p99 ms"),
        ("idle_rss_mb", "idle RSS MB"),
        ("ready_s", "ready s"),
    ],
    "big": [
        ("decided_s", "decided in s"),
        ("probes", "probes"),
        ("probes_refused", "probes refused"),
        ("probe_p50_ms", "probe p50 ms"),
        ("probe_p99_ms", "probe p99 ms"),
        ("probe_max_ms", "probe max ms"),
        ("peak_rss_mb", "peak RSS MB"),
    ],
}


def summary(results: list[dict[str, Any]]) -> None:
    """A table of medians per (scenario, rules, store), with the checks' verdict."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["scenario"], r["rules"], r["event_rules"], r["store"]), []).append(r)
    for scenario in COLUMNS:
        rows = [(key, runs) for key, runs in groups.items() if key[0] == scenario]
        if not rows:
            continue
        columns = COLUMNS[scenario]
        titles = " | ".join(t for _, t in columns)
        print(f"| {scenario} | store | rules | event rules | runs | checks | {titles} |")
        print("|---" * (len(columns) + 6) + "|")
        for (_, rules, event_rules, store), runs in rows:
            ok = all(r["all_decided"] and not r["keys_admitted_twice"] for r in runs)
            cells = [f"{statistics.median(r[k] for r in runs):,.1f}" for k, _ in columns]
            checks = "ok" if ok else "FAILED"
            print(
                f"| | {store} | {rules} | {event_rules} | {len(runs)} | {checks} | "
                f"{' | '.join(cells)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["storm", "steady", "big"])
    parser.add_argument("--rules", type=int, nargs="+", default=[200])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--client",
        choices=["lean", "httpx"],
        default="lean",
        help="The storm's senders: one kept-alive connection each (bench/keepalive.py), or "
        "httpx, which the figures before 2026-12-05 12:00 used (it takes more CPU than the "
        "server it measures).",
    )
    parser.add_argument(
        "--event-rules",
        type=int,
        nargs="+",
        default=[0],
        help="Rules on events added to the alert rules (their runs alternate): what they "
        "cost an alert storm.",
    )
    parser.add_argument("--postgres", default=os.environ.get("RESPONDER_BENCH_POSTGRES_URL"))
    args = parser.parse_args()
    results = asyncio.run(run(args))
    summary(results)
    if not all(r["all_decided"] and not r["keys_admitted_twice"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
