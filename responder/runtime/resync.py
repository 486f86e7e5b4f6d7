"""Resync with Alertmanager on taking the lead: what fired or resolved while no replica was
listening (all replicas down, or the webhook lost) is recovered from `GET /api/v2/alerts`.

The alerts go into the inbox as an ordinary webhook, so the engine decides them like any
other: an alert Alertmanager holds as firing but Responder does not is decided; an alert
Responder holds as firing but Alertmanager no longer has resolves. Suppressed alerts
(silenced, inhibited) are not decided, as Alertmanager would not have sent them, but they
still count as firing.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from responder import metrics
from responder.events.webhook import MAX_ALERTS, Alert
from responder.orchestration.alertmanager import Alertmanager
from responder.storage.inbox import InboxSource
from responder.storage.store import Store

log = logging.getLogger(__name__)

NEVER = "0001-01-01T00:00:00Z"  # the endsAt Alertmanager sends for a firing alert


def _as_sent(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert of the v2 API as the webhook would carry it, firing."""
    return {
        "status": "firing",
        "labels": alert.get("labels"),
        "annotations": alert.get("annotations") or {},
        "startsAt": alert.get("startsAt"),
        "endsAt": NEVER,
        "generatorURL": alert.get("generatorURL") or "",
        "fingerprint": alert.get("fingerprint"),
    }


async def resync(alertmanager: Alertmanager, receiver: str, store: Store) -> tuple[int, int]:
    """Commit what Responder missed to the inbox; (firing, resolved) alerts recovered."""
    listed = await alertmanager.alerts(receiver or None)
    held = {alert.fingerprint: alert for alert in await store.alerts.firing()}
    firing: list[dict[str, Any]] = []
    still_firing: set[str] = set()
    for raw in listed:
        try:
            alert = Alert.model_validate(_as_sent(raw))
        except (ValidationError, AttributeError) as exc:
            log.warning("resync: skipping an alert Alertmanager listed: %s", exc)
            continue
        still_firing.add(alert.fingerprint)
        status = raw.get("status")
        suppressed = not (isinstance(status, dict) and status.get("state") == "active")
        known = held.get(alert.fingerprint)
        if not suppressed and (known is None or known.incident != alert.incident):
            firing.append(alert.model_dump(mode="json", by_alias=True))
    now = datetime.now(UTC).isoformat()
    resolved = [
        {**alert.model_dump(mode="json", by_alias=True), "status": "resolved", "endsAt": now}
        for fingerprint, alert in held.items()
        if fingerprint not in still_firing
    ]
    recovered = firing + resolved
    for start in range(0, len(recovered), MAX_ALERTS):
        body = {
            "version": "4",
            "groupKey": '{}:{responder="resync"}',
            "truncatedAlerts": 0,
            "status": "firing" if start < len(firing) else "resolved",
            "receiver": receiver or "responder",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": alertmanager.url,
            "alerts": recovered[start : start + MAX_ALERTS],
        }
        await store.inbox.add(InboxSource.ALERTMANAGER, json.dumps(body).encode())
    metrics.RESYNCED.labels(status="firing").inc(len(firing))
    metrics.RESYNCED.labels(status="resolved").inc(len(resolved))
    return len(firing), len(resolved)
