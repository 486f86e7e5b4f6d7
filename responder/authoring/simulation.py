"""`responder simulate`: what the rules would do with one webhook, explained."""

from __future__ import annotations

import json
import time

from pydantic import ValidationError

from responder.authoring.sandbox import Sandbox
from responder.decision.rules import load_rules
from responder.decision.services import load_services
from responder.events.webhook import AlertmanagerWebhook
from responder.exceptions import PayloadError
from responder.settings import Settings


async def simulate(settings: Settings, body: bytes, at: float | None = None) -> list[str]:
    """Feed `body` to a sandbox; describe each alert's decisions and why other rules did not
    hold, then the flow runs dispatch would create (a batch as one run, with its members).

    The sandbox's clock stands at `at` (default now): an alert that started a day ago has
    fired for a day, and its `firing_for` rules hold. The sandbox starts empty (no held
    keys, no facts but the catalog's) and dispatches nothing, so the guard's answers are
    those of a quiet system.
    """
    from responder.runtime.service import known_flows

    try:
        webhook = AlertmanagerWebhook.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise PayloadError(f"not an Alertmanager webhook: {where}: {first['msg']}") from None
    book = load_rules([settings.rules_dir], known_flows())
    catalog = load_services(settings.services_file)
    lines: list[str] = []
    ours: set[int] = set()
    async with Sandbox(book, catalog, settings.rule_vars) as sandbox:
        sandbox.clock.now = time.time() if at is None else at
        await sandbox.send("alertmanager", body)
        decided = await sandbox.decisions()
        for alert in webhook.alerts:
            shown = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
            lines.append(f"{alert.alertname}{{{shown}}} {alert.status}")
            mine = [d for d in decided if d["incident"] == alert.incident]
            ours.update(d["id"] for d in mine)
            ruled = {d["rule"] for d in mine if d["rule"]}
            for d in mine:
                lines.append(f"  {d['rule'] or '(no rule)'} → {d['verdict']}: {d['reason']}")
                if d["flow"]:
                    lines.append(f"      flow {d['flow']} {json.dumps(d['parameters'])}")
            for rule, failure in sandbox.engine.explain(alert):
                if rule.name not in ruled and failure is not None:
                    lines.append(f"  {rule.name}: {failure}")
        lines.extend(_runs(sandbox, ours))
    return lines


def _runs(sandbox: Sandbox, decisions: set[int]) -> list[str]:
    """The flow runs dispatch would create for these decisions: one per admitted decision,
    a batch as one. (A schedule's tick, caught up as the clock moves to `at`, is no part of
    the webhook's story.)"""
    keys = {run.decision_id: run.guard_key for run, _ in sandbox.admitted()}
    runs = [(run, members) for run, members in sandbox.runs() if decisions.intersection(members)]
    lines = [f"flow runs: {len(runs)}"] if runs else []
    for run, members in runs:
        lines.append(f"  {run.flow} {json.dumps(run.parameters)}")
        if len(members) > 1:
            lines.append(f"      batch of {len(members)}: {', '.join(keys[i] for i in members)}")
    return lines
