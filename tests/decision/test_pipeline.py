"""The decision pipeline: forward chaining has one depth bound, whichever path asserts."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import REGISTRY

from responder.authoring.sandbox import Sandbox
from responder.decision.pipeline import MAX_CHAIN
from responder.decision.rules import load_rules
from responder.decision.services import ServiceCatalog

# A cycle through the top of the escalation ladder: each refusal of `try` asserts
# `exhausted`, on which `again` retracts it and the `go` event, and asserts `go` anew, so
# `try` is decided (and refused) again, and so on.
LADDER_CYCLE = """
rules:
  - name: try
    match: ['alertname="Loop"']
    when: [{fact: event, where: ['type="go"']}]
    run: {flow: http-call, parameters: {url: "http://127.0.0.1:9/{{ alert.labels.instance }}"}}
    guard: {key: "try/{{ alert.labels.instance }}", max_attempts: 1}
  - name: again
    match: ['alertname="Loop"']
    when: [{fact: exhausted, where: ['rule="try"']}]
    retract:
      - {fact: exhausted, where: ['rule="try"']}
      - {fact: event, where: ['type="go"']}
    assert: {fact: event, with: {type: go, source: again}}
"""


def go(n: int) -> bytes:
    return json.dumps({"specversion": "1.0", "id": f"go-{n}", "source": "t", "type": "go"}).encode()


def chain_depth_errors() -> float:
    return REGISTRY.get_sample_value("responder_engine_errors_total", {"kind": "chain_depth"}) or 0


async def test_chaining_through_the_exhausted_fact_stops_at_max_chain(tmp_path: Path) -> None:
    """Before, a fact asserted at the top of the ladder began again at depth 0: this cycle
    recursed until Python's recursion limit broke the step (and every retry of it)."""
    (tmp_path / "rules.yaml").write_text(LADDER_CYCLE)
    book = load_rules([tmp_path / "rules.yaml"], ["http-call"])
    async with Sandbox(book, ServiceCatalog(), {}) as sandbox:
        await sandbox.send_alerts([sandbox.alert({"alertname": "Loop", "instance": "h1"})])
        await sandbox.send("cloudevents", go(1))  # the one attempt `try` is allowed
        errors = chain_depth_errors()
        await sandbox.send("cloudevents", go(2))  # refused: the cycle begins
        decided = [(d["rule"], d["verdict"]) for d in await sandbox.decisions()]
    assert chain_depth_errors() == errors + 1
    assert decided[:2] == [(None, "unmatched"), ("try", "admitted")]
    # From the event on, depth 0: `try` refused at each even depth, `again` at each odd one,
    # up to MAX_CHAIN; the matches `again`'s fact makes at MAX_CHAIN + 1 are not acted on.
    cycle = [("try", "refused"), ("again", "asserted")] * (MAX_CHAIN // 2 + 1)
    assert decided[2:] == cycle[: MAX_CHAIN + 1]
