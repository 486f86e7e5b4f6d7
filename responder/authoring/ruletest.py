"""Rule test files, in the spirit of `promtool test rules`: alerts over time in, decisions out.

    rules: [../restart-service.yaml]        # relative to this file
    services: ../../config/services.yaml    # optional catalog
    vars: {service_control_url: http://ctl}
    tests:
      - name: a crashed service is restarted once per incident
        steps:
          - at: 0s
            alerts: [{labels: {alertname: ServiceDown, instance: host-1}}]
          - at: 5m
            alerts: [{labels: {alertname: ServiceDown, instance: host-1}, status: resolved}]
          - at: 6m
            finish: [{key: "restart/host-1", state: COMPLETED}]
        expect:
          decisions:
            - {rule: restart-crashed-service, verdict: admitted, labels: {instance: host-1}}
          facts: []

Expected decisions are compared in order with the decisions that name a rule; each expected
entry checks only the keys it gives (`labels` and `parameters` check only the entries they
give). `facts`, when given, is the exact set of facts held at the end (catalog facts aside).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from responder.authoring.sandbox import Sandbox
from responder.decision.documents import Spec, load_document
from responder.decision.rules import load_rules
from responder.decision.services import ServiceCatalog, load_services
from responder.durations import Duration
from responder.events.webhook import AlertStatus, LabelName
from responder.exceptions import RuleError


class TestAlert(Spec):
    labels: dict[LabelName, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    status: AlertStatus = "firing"


class TestEvent(Spec):
    type: str = Field(min_length=1)
    source: str = "rule-test"
    subject: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class TestFinish(Spec):
    key: str
    state: Literal["COMPLETED", "FAILED", "CRASHED", "CANCELLED"] = "COMPLETED"


class TestStep(Spec):
    at: Duration = 0.0
    alerts: list[TestAlert] = Field(default_factory=list)
    events: list[TestEvent] = Field(default_factory=list)
    finish: list[TestFinish] = Field(default_factory=list)


class ExpectedDecision(Spec):
    rule: str
    verdict: str | None = None
    refusal: str | None = None
    key: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class Expectation(Spec):
    decisions: list[ExpectedDecision] = Field(default_factory=list)
    facts: list[dict[str, str]] | None = None


class RuleTest(Spec):
    name: str = Field(min_length=1)
    steps: list[TestStep] = Field(min_length=1)
    expect: Expectation


class RuleTestFile(Spec):
    rules: list[str] = Field(min_length=1, description="Rule files, relative to this file.")
    services: str | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    tests: list[RuleTest] = Field(min_length=1)


@dataclass(frozen=True)
class TestResult:
    """One test's result; `diff` explains a failure."""

    file: str
    name: str
    passed: bool
    diff: str = ""


async def run_test_file(path: Path, known_flows: list[str]) -> list[TestResult]:
    """Run every test in one file on its own sandbox."""
    text = path.read_text(encoding="utf-8")
    spec, _ = load_document(text, str(path), RuleTestFile, RuleError)
    if spec is None:
        raise RuleError("empty test file", file=str(path))
    book = load_rules([path.parent / p for p in spec.rules], known_flows)
    catalog = load_services(path.parent / spec.services) if spec.services else ServiceCatalog()
    outcomes = []
    for test in spec.tests:
        async with Sandbox(book, catalog, spec.vars) as sandbox:
            actual = await _run(sandbox, test)
        expected = _expected(test.expect)
        projected = _project(expected, actual)
        diff = "" if projected == expected else _diff(expected, projected)
        outcomes.append(TestResult(str(path), test.name, not diff, diff))
    return outcomes


async def _run(sandbox: Sandbox, test: RuleTest) -> dict[str, Any]:
    start = sandbox.clock.now
    for step in sorted(test.steps, key=lambda s: s.at):
        sandbox.clock.now = start + step.at
        await sandbox.settle()  # timers due by now fire first
        if step.alerts:
            await sandbox.send_alerts(
                [sandbox.alert(a.labels, a.annotations, a.status) for a in step.alerts]
            )
        if step.events:
            events = [
                {"specversion": "1.0", "id": f"{start + step.at}-{i}", **e.model_dump()}
                for i, e in enumerate(step.events)
            ]
            await sandbox.send("cloudevents", json.dumps(events).encode())
        for finish in step.finish:
            await sandbox.finish(finish.key, finish.state)
    decisions = [
        {
            "rule": d["rule"],
            "verdict": d["verdict"],
            "refusal": d["refusal"],
            "key": d["guard_key"],
            "labels": d["labels"],
            "parameters": d["parameters"] or {},
        }
        for d in await sandbox.decisions()
        if d["rule"] is not None
    ]
    facts = [{"fact": f.name, **f.fields} for f in sandbox.engine.facts() if f.source != "catalog"]
    return {"decisions": decisions, "facts": sorted(facts, key=json.dumps)}


def _expected(expect: Expectation) -> dict[str, Any]:
    found: dict[str, Any] = {
        "decisions": [d.model_dump(exclude_defaults=True) for d in expect.decisions]
    }
    found["facts"] = sorted(expect.facts, key=json.dumps) if expect.facts is not None else None
    return found


def _project(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """The actual results cut down to what each expected entry looks at; extras stay whole."""
    decisions = []
    for i, have in enumerate(actual["decisions"]):
        if i >= len(expected["decisions"]):
            decisions.append(have)
            continue
        want = expected["decisions"][i]
        decisions.append(
            {
                key: {k: have[key].get(k) for k in value} if isinstance(value, dict) else have[key]
                for key, value in want.items()
            }
        )
    facts = actual["facts"] if expected["facts"] is not None else None
    return {"decisions": decisions, "facts": facts}


def _diff(expected: dict[str, Any], projected: dict[str, Any]) -> str:
    want = json.dumps(expected, indent=2, sort_keys=True).splitlines()
    got = json.dumps(projected, indent=2, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))
