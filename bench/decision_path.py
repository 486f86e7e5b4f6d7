"""Benchmark of the decision path: inbox → engine → guard → decision recorded.

Runs the real EngineLoop on a real store (SQLite file, or PostgreSQL with --postgres),
with generated rules, and reports medians over repeated runs. Nothing is dispatched.

    python bench/decision_path.py --rules 10 200 1000 --alerts 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from responder.control.guard import Guard
from responder.decision.engine import Engine, EngineRejected
from responder.decision.rules import RuleBook, load_rule_text
from responder.decision.services import ServiceCatalog
from responder.events.webhook import Alert
from responder.runtime.loop import EngineLoop, collect_garbage_less_often
from responder.storage.store import Store

GROUP = 20


RULE = """\
  - name: rule-{i}
    match: ['alertname="Alert{i}"', 'severity=~"critical|page"']
    unless: [{{fact: maintenance, where: ['instance="{{{{ alert.labels.instance }}}}"']}}]
    run:
      flow: http-call
      parameters: {{url: "http://127.0.0.1:9/r{i}/{{{{ alert.labels.instance | segment }}}}"}}
    guard:
      key: "r{i}/{{{{ alert.labels.instance }}}}"
      mutex: ["host:{{{{ alert.labels.instance }}}}"]
"""


def rule_text(count: int) -> str:
    """`count` rules, each with a regex, an unless join, a key and a host mutex."""
    return "rules:\n" + "".join(RULE.format(i=i) for i in range(count))


def book_of(count: int) -> RuleBook:
    rules, sources = load_rule_text(rule_text(count), "bench.yaml")
    return RuleBook(tuple(rules), tuple(sources))


def payloads(alerts: int, rules: int, instances: int = 2000) -> list[bytes]:
    """Webhook bodies of GROUP alerts: 10% match a rule, 60% other names, 30% noise."""
    now = "2026-11-25T23:17:29.549Z"
    bodies = []
    for start in range(0, alerts, GROUP):
        group = []
        for n in range(start, min(start + GROUP, alerts)):
            kind = n % 10
            name = f"Alert{n % rules}" if kind == 0 else (f"Other{n % 50}" if kind < 7 else "Noise")
            group.append(
                {
                    "status": "firing",
                    "labels": {
                        "alertname": name,
                        "instance": f"host-{n % instances}",
                        "severity": "critical",
                        "n": str(n),
                    },
                    "annotations": {"summary": "bench"},
                    "startsAt": now,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": f"{n:016x}",
                }
            )
        bodies.append(
            json.dumps(
                {
                    "version": "4",
                    "groupKey": "{}",
                    "status": "firing",
                    "receiver": "r",
                    "alerts": group,
                }
            ).encode()
        )
    return bodies


async def decided_per_second(url: str, rules: int, alerts: int) -> dict[str, float]:
    store = Store(url)
    await store.migrate()
    loop = EngineLoop(store, Guard(store, 3600), None, book_of(rules), ServiceCatalog(), batch=256)
    await loop.rebuild()
    collect_garbage_less_often()  # as EngineLoop.run does
    for body in payloads(alerts, rules):
        await store.inbox.add("alertmanager", body)
    started = time.perf_counter()
    while await loop.step():
        pass
    elapsed = time.perf_counter() - started
    recorded = len(await store.decisions.recent(limit=alerts + 1))
    await store.close()
    assert recorded == alerts, f"{recorded} decisions for {alerts} alerts"
    return {"alerts_per_s": alerts / elapsed}


def engine_per_second(rules: int, alerts: int) -> float:
    engine = Engine(book_of(rules))
    engine.compile()
    sample = [
        Alert.model_validate(a)
        for body in payloads(alerts, rules)
        for a in json.loads(body)["alerts"]
    ]
    started = time.perf_counter()
    for alert in sample:
        engine.assert_alert(alert)
    return alerts / (time.perf_counter() - started)


def startup_seconds(rules: int) -> float:
    text = rule_text(rules)
    started = time.perf_counter()
    parsed, sources = load_rule_text(text, "bench.yaml")
    Engine(RuleBook(tuple(parsed), tuple(sources))).compile()
    return time.perf_counter() - started


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def held_alerts(count: int, rules: int = 200) -> dict[str, Any]:
    """Distinct firing alerts held at once by a fresh engine: none dropped, and the RSS."""
    engine = Engine(book_of(rules))
    engine.compile()
    before = rss_mb()
    rejected = 0
    for body in payloads(count, rules, instances=count):
        for raw in json.loads(body)["alerts"]:
            try:
                engine.assert_alert(Alert.model_validate(raw))
            except EngineRejected:
                rejected += 1
    return {
        "held": engine.fact_count,
        "rejected": rejected,
        "rules": rules,
        "rss_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, nargs="+", default=[10, 200, 1000])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("RESPONDER_BENCH_POSTGRES_URL"))
    parser.add_argument("--held", type=int, default=100_000)
    parser.add_argument("--held-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.held_only:
        print(json.dumps(held_alerts(args.held_only)))
        return
    results: dict[str, Any] = {"alerts": args.alerts, "repeat": args.repeat, "rows": []}
    for rules in args.rules:
        row: dict[str, Any] = {"rules": rules}
        row["engine_alerts_per_s"] = statistics.median(
            engine_per_second(rules, args.alerts) for _ in range(args.repeat)
        )
        row["startup_s"] = statistics.median(startup_seconds(rules) for _ in range(args.repeat))
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite+aiosqlite:///{tmp}/bench.db"
                runs.append(
                    asyncio.run(decided_per_second(url, rules, args.alerts))["alerts_per_s"]
                )
        row["sqlite_decided_per_s"] = statistics.median(runs)
        if args.postgres:
            pg = []
            for _ in range(args.repeat):
                asyncio.run(_reset(args.postgres))
                pg.append(
                    asyncio.run(decided_per_second(args.postgres, rules, args.alerts))[
                        "alerts_per_s"
                    ]
                )
            row["postgres_decided_per_s"] = statistics.median(pg)
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    if args.held:
        # A process of its own, so nothing measured before inflates its RSS.
        out = subprocess.run(
            [sys.executable, __file__, "--held-only", str(args.held)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results["held"] = json.loads(out)
        print(json.dumps(results["held"]), flush=True)
    print(json.dumps(results))


async def _reset(url: str) -> None:
    store = Store(url)
    await store.drop_schema()
    await store.close()


if __name__ == "__main__":
    main()
