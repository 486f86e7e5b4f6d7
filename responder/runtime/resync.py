"""Resync with Alertmanager: what fired or resolved while no replica was listening (all
replicas down, or a webhook lost) is recovered from `GET /api/v2/alerts`, on taking the lead
and then periodically (`runtime/recovery.py` schedules it); so are the alerts a truncated
webhook left out (`recover_group`).

The alerts go into the inbox as an ordinary webhook, so the engine decides them like any
other: an alert Alertmanager holds as firing but Responder does not is decided; an alert
Responder holds as firing but Alertmanager no longer has resolves. Suppressed alerts
(silenced, inhibited) are not decided, as Alertmanager would not have sent them, but they
still count as firing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from responder import metrics
from responder.events.webhook import MAX_ALERTS, Alert
from responder.storage.inbox import InboxSource
from responder.storage.store import Store

if TYPE_CHECKING:
    from responder.orchestration.alertmanager import Alertmanager

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
    """Commit what Responder missed to the inbox; (firing, resolved) alerts recovered.

    What Responder holds is read before Alertmanager's list: an alert a webhook brings in
    between is then missing from the held set (and at worst recommitted, a duplicate), never
    held but missing from an older list, which would resolve an alert that is firing.
    """
    held = {alert.fingerprint: alert for alert in await store.alerts.firing()}
    listed = await alertmanager.alerts(receiver or None)
    firing, still_firing = await _missed(listed, held, store)
    now = datetime.now(UTC).isoformat()
    resolved = [
        {**alert.model_dump(mode="json", by_alias=True), "status": "resolved", "endsAt": now}
        for fingerprint, alert in held.items()
        if fingerprint not in still_firing
    ]
    await _commit(store, alertmanager.url, receiver, firing, resolved)
    return len(firing), len(resolved)


async def recover_group(
    alertmanager: Alertmanager, receiver: str, group: Mapping[str, str], store: Store
) -> int:
    """Commit the firing alerts of one group that a truncated webhook left out (those
    Responder does not hold); how many. Nothing resolves: the group's list is not the whole
    truth about what Responder holds."""
    held = {alert.fingerprint: alert for alert in await store.alerts.firing()}
    listed = await alertmanager.alerts(receiver or None, group)
    firing, _ = await _missed(listed, held, store)
    await _commit(store, alertmanager.url, receiver, firing, [])
    return len(firing)


async def _missed(
    listed: list[dict[str, Any]], held: dict[str, Alert], store: Store
) -> tuple[list[dict[str, Any]], set[str]]:
    """The listed alerts to decide (active, not held, not already resolved), and the
    fingerprints of every listed alert."""
    candidates: list[Alert] = []
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
            candidates.append(alert)
    resolved = await _already_resolved(store, candidates)
    firing = [
        alert.model_dump(mode="json", by_alias=True)
        for alert in candidates
        if alert.incident not in resolved
    ]
    return firing, still_firing


async def _already_resolved(store: Store, alerts: list[Alert]) -> set[str]:
    """The incidents among `alerts` that Responder has seen resolve.

    A resync that resolved an alert which was in fact still firing (Alertmanager's list raced
    a webhook) leaves it so: the engine records its firing notices as duplicates ("incident
    already resolved") and never decides it again. Committing it at every resync would only
    add such a duplicate each time.
    """
    if not alerts:
        return set()
    async with store.transaction() as conn:
        seen = await store.alerts.known_identities(conn, alerts)
    return {
        alert.incident for alert in alerts if (alert.fingerprint, alert.started, "resolved") in seen
    }


async def _commit(
    store: Store,
    url: str,
    receiver: str,
    firing: list[dict[str, Any]],
    resolved: list[dict[str, Any]],
) -> None:
    """Into the inbox as ordinary webhooks (never truncated), firing first."""
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
            "externalURL": url,
            "alerts": recovered[start : start + MAX_ALERTS],
        }
        await store.inbox.add(InboxSource.ALERTMANAGER, json.dumps(body).encode())
    metrics.RESYNCED.labels(status="firing").inc(len(firing))
    metrics.RESYNCED.labels(status="resolved").inc(len(resolved))
