"""The decision a flow run started by hand stands for (`responder.events.manual_runs`).

A manual run goes through the same guard as a rule's decision. When rules run the same flow,
the run takes their policy (key, mutexes, cooldown, approval), so a restart by hand cannot
slip past the lock that a rule's restart of the same host would hold.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from responder.decision.conditions import fact_meets
from responder.decision.decisions import Decision, guard_key, template_context
from responder.decision.rules import GuardSpec, RuleBook
from responder.decision.services import ServiceCatalog
from responder.decision.templates import render
from responder.events.facts import Fact
from responder.events.manual_runs import MANUAL_RULE, RunRequest
from responder.events.webhook import Alert
from responder.exceptions import TemplateError

MANUAL_ALERTNAME = "ManualRun"


def default_key(flow: str, parameters: dict[str, Any]) -> str:
    """One active manual run per flow and parameter set."""
    digest = hashlib.sha256(
        json.dumps(parameters, sort_keys=True, default=str).encode()
    ).hexdigest()
    return f"manual/{flow}/{digest[:16]}"


@dataclass(frozen=True)
class RulePolicy:
    """What the rules that run a flow say about a run of it by hand, for these parameters."""

    rule: str
    labels: Mapping[str, str]  # the labels the rule's parameters say the request names
    key: str
    mutex: tuple[str, ...]
    policy: GuardSpec
    approval: bool  # the rule's, or the catalog's for the service
    blocked: str | None  # why the rule would not run now (an `unless` fact holds)


_LABEL_PARAMETER = re.compile(r"^\s*\{\{\s*alert\.labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}\s*$")


def rule_policy(
    request: RunRequest,
    book: RuleBook,
    catalog: ServiceCatalog | None,
    facts: Iterable[Fact],
    rule_vars: Mapping[str, str],
) -> RulePolicy | None:
    """The policy of the first rule that runs this flow and whose key renders for the request.

    The rule's parameters that are exactly `{{ alert.labels.NAME }}` say which label each
    parameter came from (`host` ← `instance`), so the request's parameters give the labels
    the rule's key, mutexes, catalog entry and `unless` facts are rendered and joined with:
    a restart by hand takes the same key, cooldown and host lock as the rule's restart.
    """
    facts = list(facts)
    unrendered: list[str] = []
    for rule in book.rules:
        if rule.run is None or rule.guard is None or rule.run.flow != request.flow:
            continue
        labels = {
            found.group(1): str(request.parameters[name])
            for name, template in rule.run.parameters.items()
            if isinstance(template, str)
            and (found := _LABEL_PARAMETER.match(template))
            and isinstance(request.parameters.get(name), str | int | float)
        }
        alert = _manual_alert(request, 0, 0.0, labels)
        context = template_context(alert, rule_vars, None, catalog)
        try:
            key = guard_key(rule.name, rule.guard, context)
            mutex = tuple(render(m, context, name=True) for m in rule.guard.mutex)
        except TemplateError as exc:
            unrendered.append(f"{rule.name} ({exc})")
            continue  # the request does not say what this rule's key needs; another may
        blocked = next(
            (
                f"rule {rule.name} would not run: unless fact {fact.name} {dict(fact.fields)}"
                for condition in rule.unless
                for fact in facts
                if fact_meets(fact, condition, alert)
            ),
            None,
        )
        approval = rule.guard.approval or bool(context["service"].get("approval"))
        return RulePolicy(rule.name, labels, key, mutex, rule.guard, approval, blocked)
    if unrendered:
        # Rules guard this flow, but the request does not name what their keys need: running
        # it under the request's own key would skip their approval, cooldown and locks.
        first = next(r for r in book.rules if r.run and r.guard and r.run.flow == request.flow)
        assert first.guard is not None
        reason = (
            f"rules run flow {request.flow} under a guard, but the parameters do not give "
            f"what their keys and mutexes need: {'; '.join(unrendered)}"
        )
        key = default_key(request.flow, request.parameters)
        return RulePolicy(first.name, {}, key, (), first.guard, True, reason)
    return None


def _manual_alert(
    request: RunRequest, inbox_id: int, received_at: float, labels: Mapping[str, str]
) -> Alert:
    return Alert(
        status="firing",
        labels={
            **labels,
            "alertname": MANUAL_ALERTNAME,
            "flow": request.flow,
            "requested_by": request.requested_by,
            **({"declared_by": request.declared_by} if request.declared_by else {}),
        },
        annotations={"reason": request.reason},
        starts_at=datetime.fromtimestamp(received_at, UTC),
        fingerprint=f"{inbox_id:016x}",
    )


def decision_for(
    request: RunRequest, inbox_id: int, received_at: float, ruled: RulePolicy | None = None
) -> Decision:
    """The decision a run request stands for; its 'alert' says who asked, and why.

    With `ruled` (the policy of the rule that runs this flow), the run takes the rule's key,
    mutexes, cooldowns and approval; the request may add to them (its own key becomes one more
    mutex name, a longer cooldown, approval), never take them away.
    """
    if ruled is not None:
        parameters = dict(request.parameters)
        if request.approval or ruled.approval:
            parameters["approval_required"] = True
        mutex = {*ruled.mutex, *request.mutex, *([request.key] if request.key else [])}
        # No silence: the run's "alert" is the request, which Alertmanager does not hold.
        policy = ruled.policy.model_copy(
            update={"cooldown": max(ruled.policy.cooldown, request.cooldown), "silence": False}
        )
        return Decision(
            rule=MANUAL_RULE,
            flow=request.flow,
            parameters=parameters,
            key=ruled.key,
            alert=_manual_alert(
                request, inbox_id, received_at, {**ruled.labels, "policy_of": ruled.rule}
            ),
            mutex=tuple(sorted(mutex)),
            policy=policy,
        )
    alert = _manual_alert(request, inbox_id, received_at, {})
    key = request.key or default_key(request.flow, request.parameters)
    parameters = dict(request.parameters)
    if request.approval:
        parameters["approval_required"] = True
    # The key and mutexes are literal names here, not templates: they live on the decision.
    policy = GuardSpec(key="-", cooldown=request.cooldown)
    return Decision(
        rule=MANUAL_RULE,
        flow=request.flow,
        parameters=parameters,
        key=key,
        alert=alert,
        mutex=tuple(sorted(set(request.mutex))),
        policy=policy,
    )
