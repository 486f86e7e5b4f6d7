"""Rule test files, in the spirit of `promtool test rules`: alerts over time in, decisions out.

    rules: [../restart-service.yaml]        # relative to this file
    services: fixtures/services.yaml        # optional catalog fixture
    facts: [{fact: deploy, with: {namespace: shop}, ttl: 1h}]   # or a fixture file
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
        until: 1h                           # time runs on: timers due by then fire
        expect:
          decisions:
            - {rule: restart-crashed-service, verdict: admitted, labels: {instance: host-1}}
          facts: []

Expected decisions are compared in order with the decisions that name a rule; each expected
entry checks only the keys it gives (`labels` and `parameters` check only the entries they
give; `reason` is text the decision's reason contains). `facts`, when given, is the exact set
of facts held at the end (catalog facts aside). Time runs between steps and on to `until`:
each timer fires at its own time. A `finish` on a key no flow run holds fails the test.
Events are CloudEvents (`type`, `source`, `id`, `subject`, `data`), sent at the step's time;
an event given the `id` of one sent before is a resend. Time running on to `until` fires
absence timers (`not_followed_by`) and schedules' ticks too. Fixtures (catalogs, fact
files) live in `rules/tests/fixtures/`, where `responder test` does not take them for tests.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from responder.authoring.sandbox import EPOCH, Sandbox
from responder.decision.documents import Spec, load_document
from responder.decision.rules import AssertSpec, load_rules
from responder.decision.services import ServiceCatalog, load_services
from responder.durations import Duration
from responder.events.facts import Fact
from responder.events.webhook import AlertStatus, LabelName
from responder.exceptions import RuleError


class TestAlert(Spec):
    labels: dict[LabelName, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    status: AlertStatus = "firing"


class TestEvent(Spec):
    type: str = Field(min_length=1)
    source: str = "rule-test"
    id: str | None = Field(
        None, description="Its identity with `source`; the same again is a resent event."
    )
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
    reason: str | None = Field(
        None, description="Text the decision's reason contains (an error's, a refusal's)."
    )
    key: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class Expectation(Spec):
    decisions: list[ExpectedDecision] = Field(default_factory=list)
    facts: list[dict[str, str]] | None = None


class RuleTest(Spec):
    name: str = Field(min_length=1)
    steps: list[TestStep] = Field(min_length=1)
    until: Duration | None = Field(
        None,
        description="After the last step, time runs on to this offset: every timer due by "
        "then fires (firing_for, retries, facts expiring, refused incidents decided again).",
    )
    expect: Expectation


class FactFixtures(Spec):
    """A fact fixture file (rules/tests/fixtures/): facts held from the start of each test."""

    facts: list[AssertSpec] = Field(default_factory=list)


class RuleTestFile(Spec):
    rules: list[str] = Field(min_length=1, description="Rule files, relative to this file.")
    services: str | None = Field(None, description="A catalog fixture, relative to this file.")
    facts: list[AssertSpec] | str = Field(
        default_factory=list,
        description="Facts held from the start of each test (as a rule's `assert` writes "
        "them), or a fact fixture file relative to this file.",
    )
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read: {exc}", file=str(path)) from None
    spec, _ = load_document(text, str(path), RuleTestFile, RuleError)
    if spec is None:
        raise RuleError("empty test file", file=str(path))
    book = load_rules([path.parent / p for p in spec.rules], known_flows)
    catalog = load_services(path.parent / spec.services) if spec.services else ServiceCatalog()
    fixtures = (
        _fact_fixtures(path.parent / spec.facts) if isinstance(spec.facts, str) else spec.facts
    )
    outcomes = []
    for test in spec.tests:
        facts = [Fact(f.fact, dict(f.fields), EPOCH + f.ttl, source="fixture") for f in fixtures]
        async with Sandbox(book, catalog, spec.vars, facts=facts) as sandbox:
            actual, problems = await _run(sandbox, test)
        expected = _expected(test.expect)
        projected = _project(expected, actual)
        diff = "" if projected == expected else _diff(expected, projected)
        diff = "\n".join([*problems, diff]).strip()
        outcomes.append(TestResult(str(path), test.name, not diff, diff))
    return outcomes


def _fact_fixtures(path: Path) -> list[AssertSpec]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read the fact fixture: {exc}", file=str(path)) from None
    fixtures, _ = load_document(text, str(path), FactFixtures, RuleError)
    return fixtures.facts if fixtures is not None else []


async def _run(sandbox: Sandbox, test: RuleTest) -> tuple[dict[str, Any], list[str]]:
    """What the test's steps made the sandbox decide and hold, and what went wrong on the
    way (a `finish` on a key no run holds)."""
    start = sandbox.clock.now
    problems: list[str] = []
    for step in sorted(test.steps, key=lambda s: s.at):
        await sandbox.run_until(start + step.at)  # timers due by then fire at their time
        if step.alerts:
            await sandbox.send_alerts(
                [sandbox.alert(a.labels, a.annotations, a.status) for a in step.alerts]
            )
        if step.events:
            time = datetime.fromtimestamp(sandbox.clock.now, UTC).isoformat()
            events = [
                {"specversion": "1.0", "time": time, **e.model_dump()}
                | {"id": e.id or f"{start + step.at}-{i}"}
                for i, e in enumerate(step.events)
            ]
            await sandbox.send("cloudevents", json.dumps(events).encode())
        for finish in step.finish:
            held = await sandbox.held_keys()
            if not await sandbox.finish(finish.key, finish.state):
                problems.append(
                    f"error: step at {step.at:g}s: finish: no flow run holds key "
                    f"{finish.key!r}; runs hold: {', '.join(map(repr, held)) or 'none'}"
                )
    if test.until is not None:
        await sandbox.run_until(start + test.until)
    decisions = [
        {
            "rule": d["rule"],
            "verdict": d["verdict"],
            "refusal": d["refusal"],
            "reason": d["reason"],
            "key": d["guard_key"],
            "labels": d["labels"],
            "parameters": d["parameters"] or {},
        }
        for d in await sandbox.decisions()
        if d["rule"] is not None
    ]
    facts = [{"fact": f.name, **f.fields} for f in sandbox.engine.facts() if f.source != "catalog"]
    return {"decisions": decisions, "facts": sorted(facts, key=json.dumps)}, problems


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
        decisions.append({key: _seen(key, value, have[key]) for key, value in want.items()})
    facts = actual["facts"] if expected["facts"] is not None else None
    return {"decisions": decisions, "facts": facts}


def _seen(key: str, wanted: Any, have: Any) -> Any:
    """What an expected entry sees of an actual value: the keys it names of a mapping; a
    reason as the expected text when it contains it."""
    if isinstance(wanted, dict):
        return {k: have.get(k) for k in wanted}
    if key == "reason" and isinstance(have, str) and wanted in have:
        return wanted
    return have


def _diff(expected: dict[str, Any], projected: dict[str, Any]) -> str:
    want = json.dumps(expected, indent=2, sort_keys=True).splitlines()
    got = json.dumps(projected, indent=2, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))
