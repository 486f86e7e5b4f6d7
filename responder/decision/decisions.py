"""Turning a rule match into a concrete `Decision`: which flow, which parameters, which key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from responder.decision.engine import Match
from responder.decision.hosts import host_of
from responder.decision.rules import GuardSpec, RunBatch
from responder.decision.services import ServiceCatalog
from responder.decision.templates import render, render_value
from responder.events.facts import Fact
from responder.events.webhook import Alert


class Verdict(StrEnum):
    """The verdicts a decision record can carry."""

    ADMITTED = "admitted"  # the guard took the key; a flow run follows
    REFUSED = "refused"  # the guard refused; `refusal` says which check, `reason` the detail
    SHADOW = "shadow"  # a shadow rule: recorded what the guard would do, nothing dispatched
    DRY_RUN = "dry_run"  # Responder runs in dry-run mode: recorded, nothing dispatched
    ASSERTED = "asserted"  # a rule without `run` held and asserted or retracted facts
    DEFERRED = "deferred"  # the rule held; it decides once its `settle` time is over
    DUPLICATE = "duplicate"  # this (fingerprint, startsAt, status) was already handled
    UNMATCHED = "unmatched"  # a new firing alert no rule matched
    RESOLVED = "resolved"  # a resolved alert; its fact was retracted
    ERROR = "error"  # the decision could not be made (template failed, bad message)


@dataclass(frozen=True)
class Decision:
    """What a rule decided to do about an alert, before the guard has spoken."""

    rule: str
    flow: str
    parameters: dict[str, Any] = field(hash=False)
    key: str
    alert: Alert
    mutex: tuple[str, ...] = ()
    policy: GuardSpec = field(default_factory=lambda: GuardSpec(key="-"), hash=False)
    shadow: bool = False
    # The blast radius resolved for this alert by `decide`: the cap on active runs, and how
    # it was reached when a percentage of the service's hosts. None: the policy's own number.
    max_active: int | None = None
    max_active_basis: str = ""
    batch: RunBatch | None = None  # merged with others into one flow run (see dispatch)
    # Decided on an event: no incident fires, so none is tracked, and its run may act
    # whatever alert resolves (an event resolves nothing).
    from_event: bool = False

    @property
    def active_cap(self) -> int | None:
        """At most this many active runs in the policy's scope; None: no cap."""
        if self.max_active is not None:
            return self.max_active
        return self.policy.max_active if isinstance(self.policy.max_active, int) else None

    @property
    def service(self) -> str | None:
        """The alert's `service` label."""
        return self.alert.labels.get("service")


def blast_radius(policy: GuardSpec, service: Mapping[str, Any]) -> tuple[int | None, str]:
    """The cap on active runs for an alert of `service` (its catalog entry), and its basis.

    A percentage needs the service's `hosts`; without them the cap is 0, so the guard
    refuses and says why, rather than guessing.
    """
    limit = policy.max_active
    if limit is None or isinstance(limit, int):
        return limit, ""
    hosts = service.get("hosts")
    name = service.get("name", "(no service)")
    if not hosts:
        return 0, f"{limit} of service {name}, whose hosts the catalog does not give"
    cap = max(1, int(hosts) * int(limit[:-1]) // 100)
    return cap, f"{limit} of {hosts} hosts of service {name}"


def template_context(
    alert: Alert,
    rule_vars: Mapping[str, str],
    facts: Mapping[str, Mapping[str, str]] | None = None,
    catalog: ServiceCatalog | None = None,
    event: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a rule template sees.

    `alert` (labels are data; `alert.host` is its host identity, see `responder.decision.hosts`),
    the `facts` its `when` joined, the catalog entry of its `service` label, and `vars`; an
    event rule's templates see `event` too (type, source, subject, id, time, data).
    """
    service = catalog.service_of(dict(alert.labels)) if catalog else {}
    context: dict[str, Any] = {} if event is None else {"event": dict(event)}
    return context | {
        "alert": {
            "host": host_of(alert.labels, service),
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "status": alert.status,
            "fingerprint": alert.fingerprint,
            "startsAt": alert.starts_at.isoformat(),
            "generatorURL": alert.generator_url,
        },
        "facts": {name: dict(fields) for name, fields in (facts or {}).items()},
        "service": service,
        "vars": dict(rule_vars),
    }


def decide(
    match: Match, rule_vars: Mapping[str, str], catalog: ServiceCatalog | None = None
) -> Decision:
    """Render a match's flow parameters and guard key; raises `TemplateError`."""
    rule = match.rule
    if rule.run is None or rule.guard is None:
        raise ValueError(f"rule {rule.name!r} runs no flow")
    context = template_context(match.alert, rule_vars, match.facts, catalog, match.event)
    parameters = render_value(rule.run.parameters, context)
    if rule.guard.approval or context["service"].get("approval"):
        # Every remediation flow takes this: its run waits for a person in the Prefect UI.
        parameters["approval_required"] = True
    max_active, basis = blast_radius(rule.guard, context["service"])
    return Decision(
        rule=rule.name,
        flow=rule.run.flow,
        parameters=parameters,
        key=guard_key(rule.name, rule.guard, context),
        alert=match.alert,
        mutex=tuple(sorted({render(name, context, name=True) for name in rule.guard.mutex})),
        policy=rule.guard,
        shadow=rule.shadow,
        max_active=max_active,
        max_active_basis=basis,
        batch=rule.run.batch,
        from_event=match.event is not None,
    )


def guard_key(rule: str, policy: GuardSpec, context: Mapping[str, Any]) -> str:
    """The rendered key, `RULE:KEY` unless the rule shares its keys (`key_scope: shared`).

    Rule names hold no `:` and rendered values have theirs escaped, so one rule's keys never
    meet another's, whatever the labels say.
    """
    key = render(policy.key, context, name=True)
    return key if policy.key_scope == "shared" else f"{rule}:{key}"


def fact_for(
    match: Match, rule_vars: Mapping[str, str], catalog: ServiceCatalog | None, now: float
) -> Fact:
    """Render the fact a match's rule asserts; raises `TemplateError`."""
    spec = match.rule.assert_
    if spec is None:
        raise ValueError(f"rule {match.rule.name!r} asserts no fact")
    context = template_context(match.alert, rule_vars, match.facts, catalog, match.event)
    fields = {name: render(template, context) for name, template in spec.fields.items()}
    return Fact(spec.fact, fields, now + spec.ttl, source=f"rule:{match.rule.name}")
