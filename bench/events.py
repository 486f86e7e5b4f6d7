"""Benchmark of rules on events: CloudEvents in the inbox → event rules → guard → decision.

Runs the real EngineLoop on a real store (SQLite file, or PostgreSQL with --postgres) with
generated event rules (each: a `type` matcher, a `data.env` matcher, an `unless` join with a
`freeze` fact, a flow, a key on the event's subject) and batches of 20 CloudEvents: 10 %
match a rule, 90 % are other types (a fact for the alert rules, no event rule). Every matching
event is decided (admitted, or refused: its key is held); the run checks that each got
exactly one decision. Nothing is dispatched.

    python bench/events.py --rules 50 --events 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.decision_path import _reset
from responder.control.guard import Guard
from responder.decision.rules import RuleBook, load_rule_text
from responder.decision.services import ServiceCatalog
from responder.runtime.loop import EngineLoop, collect_garbage_less_often
from responder.storage.store import Store

BATCH = 20

EVENT_RULE = """\
  - name: event-rule-{i}
    event: ['type="deploy.finished.{i}"', 'data.env=~"prod|staging"']
    unless: [{{fact: freeze, where: ['workload="{{{{ event.subject }}}}"']}}]
    run:
      flow: http-call
      parameters: {{url: "http://127.0.0.1:9/smoke/{{{{ event.subject | segment }}}}"}}
    guard: {{key: "smoke/{{{{ event.subject }}}}"}}
"""


def event_rule_text(count: int) -> str:
    """`count` event rules (no `rules:` header: appended to an alert rule file)."""
    return "".join(EVENT_RULE.format(i=i) for i in range(count))


def book_of(count: int) -> RuleBook:
    rules, sources = load_rule_text("rules:\n" + event_rule_text(count), "bench.yaml")
    return RuleBook(tuple(rules), tuple(sources))


def bodies(events: int, rules: int, subjects: int = 2000) -> tuple[list[bytes], int]:
    """Batches of CloudEvents, and how many of them a rule matches."""
    out, matching = [], 0
    for start in range(0, events, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, events)):
            match = n % 10 == 0
            matching += match
            kind = f"deploy.finished.{n % rules}" if match else f"build.done.{n % 50}"
            batch.append(
                {
                    "specversion": "1.0",
                    "id": f"e{n}",
                    "source": "bench",
                    "type": kind,
                    "subject": f"app-{n % subjects}",
                    "time": "2026-12-04T20:00:00Z",
                    "data": {"env": "prod", "n": n},
                }
            )
        out.append(json.dumps(batch).encode())
    return out, matching


async def decided_per_second(url: str, rules: int, events: int) -> dict[str, float]:
    store = Store(url)
    await store.migrate()
    loop = EngineLoop(store, Guard(store, 3600), None, book_of(rules), ServiceCatalog(), batch=256)
    await loop.rebuild()
    collect_garbage_less_often()
    payload, matching = bodies(events, rules)
    for body in payload:
        await store.inbox.add("cloudevents", body)
    started = time.perf_counter()
    while await loop.step():
        pass
    elapsed = time.perf_counter() - started
    recorded = len(await store.decisions.recent(limit=events + 1))
    await store.close()
    assert recorded == matching, f"{recorded} decisions for {matching} matching events"
    return {"events_per_s": events / elapsed, "decided_per_s": matching / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, nargs="+", default=[50])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("RESPONDER_BENCH_POSTGRES_URL"))
    args = parser.parse_args()
    for rules in args.rules:
        row: dict[str, Any] = {"rules": rules, "events": args.events}
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite+aiosqlite:///{tmp}/bench.db"
                runs.append(asyncio.run(decided_per_second(url, rules, args.events)))
        row["sqlite_events_per_s"] = statistics.median(r["events_per_s"] for r in runs)
        row["sqlite_decided_per_s"] = statistics.median(r["decided_per_s"] for r in runs)
        if args.postgres:
            pg = []
            for _ in range(args.repeat):
                asyncio.run(_reset(args.postgres))
                pg.append(asyncio.run(decided_per_second(args.postgres, rules, args.events)))
            row["postgres_events_per_s"] = statistics.median(r["events_per_s"] for r in pg)
            row["postgres_decided_per_s"] = statistics.median(r["decided_per_s"] for r in pg)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
