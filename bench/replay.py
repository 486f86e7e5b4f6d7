"""Benchmark of `responder replay`: how many alerts of history it replays per second.

A day of history: N alerts (half firing, half their resolutions), one alert per webhook as
a Prometheus history is rebuilt, over 500 hosts: 40 % ServiceDown, 20 % DiskFull, 40 %
alerts no rule matches. Today's rules restart and clean; the proposed ones restart only
critical services and put a budget on cleaning. The whole replay is timed (both rule sets,
each on its own sandbox store and clock, runs ending after a minute), and its result
checked: every alert has its decisions in both replays.

    python bench/replay.py --alerts 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from responder.authoring.history import Delivery, History
from responder.authoring.replay import replay_both
from responder.decision.rules import RuleBook, load_rule_text
from responder.decision.services import ServiceCatalog
from responder.storage.inbox import InboxSource

CURRENT = """
rules:
  - name: restart
    match: ['alertname="ServiceDown"']
    run: {flow: http-call, parameters: {url: "http://ctl/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}", cooldown: 10m, max_attempts: 2}
  - name: clean
    match: ['alertname="DiskFull"']
    run: {flow: http-call, parameters: {url: "http://ctl/clean"}}
    guard: {key: "clean/{{ alert.labels.instance }}", mutex: ["host:{{ alert.labels.instance }}"]}
"""
PROPOSED = """
rules:
  - name: restart
    match: ['alertname="ServiceDown"', 'severity="critical"']
    run: {flow: http-call, parameters: {url: "http://ctl/{{ alert.labels.instance }}"}}
    guard: {key: "restart/{{ alert.labels.instance }}", cooldown: 10m, max_attempts: 2}
  - name: clean
    match: ['alertname="DiskFull"']
    run: {flow: http-call, parameters: {url: "http://ctl/clean"}}
    guard:
      key: "clean/{{ alert.labels.instance }}"
      mutex: ["host:{{ alert.labels.instance }}"]
      budget: {max_starts: 50, per: 1h, scope: global}
"""
DAY = 86_400.0
START = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def history(alerts: int, seed: int = 7) -> History:
    """`alerts` alerts: alerts/2 episodes over a day, each firing then resolving."""
    chance = random.Random(seed)
    deliveries: list[tuple[float, bytes]] = []
    for episode in range(alerts // 2):
        name = chance.choices(["ServiceDown", "DiskFull", "Other"], [4, 2, 4])[0]
        labels = {
            "alertname": name,
            "instance": f"host-{chance.randrange(500)}",
            "severity": chance.choice(["critical", "warning"]),
            "episode": str(episode),
        }
        began = START + chance.uniform(0, DAY)
        ended = began + chance.uniform(60, 3600)
        fingerprint = f"{episode:016x}"
        for status, at in (("firing", began), ("resolved", ended)):
            alert = {
                "status": status,
                "labels": labels,
                "annotations": {},
                "startsAt": datetime.fromtimestamp(began, UTC).isoformat(),
                "endsAt": datetime.fromtimestamp(ended, UTC).isoformat()
                if status == "resolved"
                else "0001-01-01T00:00:00Z",
                "fingerprint": fingerprint,
            }
            body = {"version": "4", "groupKey": "{}:{}", "status": status, "alerts": [alert]}
            deliveries.append((at, json.dumps({"receiver": "r", **body}).encode()))
    deliveries.sort()
    return History(
        [Delivery(at, i, InboxSource.ALERTMANAGER, body) for i, (at, body) in enumerate(deliveries)]
    )


def book(text: str, file: str) -> RuleBook:
    rules, sources = load_rule_text(text, file)
    return RuleBook(tuple(rules), tuple(sources))


async def replayed_per_second(alerts: int) -> dict[str, Any]:
    """One replay of `alerts` alerts through both rule sets, timed and checked."""
    past = history(alerts)
    current, proposed = book(CURRENT, "current.yaml"), book(PROPOSED, "proposed.yaml")
    began = time.perf_counter()
    comparison = await replay_both(past, current, proposed, ServiceCatalog(), {})
    seconds = time.perf_counter() - began
    for side in (comparison.current, comparison.proposed):
        # Each firing alert is decided (or unmatched), each resolution recorded.
        assert side.verdicts["resolved"] == alerts // 2, side.verdicts
        assert sum(side.verdicts.values()) >= alerts, side.verdicts
    return {
        "alerts": alerts,
        "seconds": round(seconds, 2),
        "alerts_per_s": round(alerts / seconds),
        "changes": len(comparison.changes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [asyncio.run(replayed_per_second(args.alerts)) for _ in range(args.repeat)]
    rates = [r["alerts_per_s"] for r in runs]
    print(json.dumps({**runs[0], "alerts_per_s": statistics.median(rates), "runs": rates}))


if __name__ == "__main__":
    main()
