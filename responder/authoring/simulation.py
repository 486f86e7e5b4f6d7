"""`responder simulate`: what the rules would do with one webhook, explained."""

from __future__ import annotations

import json

from pydantic import ValidationError

from responder.authoring.sandbox import Sandbox
from responder.decision.rules import load_rules
from responder.decision.services import load_services
from responder.events.webhook import AlertmanagerWebhook
from responder.exceptions import PayloadError
from responder.settings import Settings


async def simulate(settings: Settings, body: bytes) -> list[str]:
    """Feed `body` to a sandbox; describe each alert's decisions and why other rules did not hold.

    The sandbox starts empty (no held keys, no facts but the catalog's) and dispatches
    nothing, so the guard's answers are those of a quiet system.
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
    async with Sandbox(book, catalog, settings.rule_vars) as sandbox:
        # The sandbox's clock stands at the alerts' newest start, so windows count them.
        sandbox.clock.now = max(a.starts_at.timestamp() for a in webhook.alerts)
        await sandbox.send("alertmanager", body)
        decided = await sandbox.decisions()
        for alert in webhook.alerts:
            shown = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
            lines.append(f"{alert.alertname}{{{shown}}} {alert.status}")
            mine = [d for d in decided if d["incident"] == alert.incident]
            ruled = {d["rule"] for d in mine if d["rule"]}
            for d in mine:
                lines.append(f"  {d['rule'] or '(no rule)'} → {d['verdict']}: {d['reason']}")
                if d["flow"]:
                    lines.append(f"      flow {d['flow']} {json.dumps(d['parameters'])}")
            for rule, failure in sandbox.engine.explain(alert):
                if rule.name not in ruled and failure is not None:
                    lines.append(f"  {rule.name}: {failure}")
    return lines
