"""Prometheus metrics Responder exports on `/metrics`."""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter(
    "responder_webhooks_total", "Webhook requests answered, by HTTP status code.", ["code"]
)
ALERTS_RECEIVED = Counter(
    "responder_alerts_received_total", "Alerts read from the inbox, by alert status.", ["status"]
)
EVENTS_RECEIVED = Counter("responder_events_received_total", "CloudEvents read from the inbox.")
SOURCE_EVENTS = Counter(
    "responder_source_events_total",
    "Events a source (redis, prefect) committed to the inbox, or refused as invalid.",
    ["source", "result"],
)
DECISIONS = Counter(
    "responder_decisions_total",
    "Recorded decisions, by verdict and, for refusals, the guard check that refused.",
    ["verdict", "refusal"],
)


@cache
def _child(counter: Counter, *values: str) -> Any:
    return counter.labels(*values)


def count_alert(status: str) -> None:
    """Count one alert read from the inbox (on the hot path: its child is looked up once)."""
    _child(ALERTS_RECEIVED, status).inc()


def count_decision(verdict: str, refusal: str | None = None) -> None:
    """Count one recorded decision (on the hot path: its child is looked up once)."""
    _child(DECISIONS, str(verdict), refusal or "").inc()


DISPATCH_SECONDS = Histogram(
    "responder_dispatch_seconds",
    "Time from a decision being admitted to its Prefect flow run existing.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DISPATCH_FAILURES = Counter(
    "responder_dispatch_failures_total", "Flow-run creations that failed (each attempt)."
)
FLOW_RUNS_FINISHED = Counter(
    "responder_flow_runs_finished_total", "Dispatched flow runs seen in a final state.", ["state"]
)
ENGINE_ERRORS = Counter(
    "responder_engine_errors_total",
    "Engine problems: action errors, rejected facts, failed inbox rows.",
    ["kind"],
)
RATE_LIMITED = Counter(
    "responder_rate_limited_total",
    "Intake requests refused with 429 because their client exceeded its rate, by endpoint.",
    ["endpoint"],
)
INBOX_BACKLOG = Gauge("responder_inbox_backlog", "Inbox rows not yet processed by the engine.")
ACTIVE_LEASES = Gauge("responder_active_leases", "Guard keys currently held.")
RULES_LOADED = Gauge("responder_rules_loaded", "Rules in force.")
RELOADS = Counter(
    "responder_rule_reloads_total", "Reloads of rules and catalog, by result.", ["result"]
)
RELOAD_SUCCESS = Gauge(
    "responder_rule_reload_success", "1 if the last reload succeeded; 0 if the old rules stay."
)
INCIDENTS = Gauge(
    "responder_incidents",
    "Incidents by remediation state (firing ones; `resolved` counts those that resolved).",
    ["state"],
)
LEADER = Gauge("responder_leader", "1 while this replica leads (runs the engine), else 0.")
RESYNCED = Counter(
    "responder_resynced_alerts_total",
    "Alerts recovered from Alertmanager's API (on taking the lead, periodically, or left out "
    "of a truncated webhook), missed by the webhook.",
    ["status"],
)
RESYNC_FAILURES = Counter(
    "responder_resync_failures_total",
    "Resyncs with Alertmanager that failed (tried again later), by kind: takeover, periodic, "
    "truncated (a truncated group's fetch).",
    ["kind"],
)
RESYNC_SECONDS = Histogram(
    "responder_resync_seconds",
    "Time one whole resync with Alertmanager took (listing, comparing, committing).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TRUNCATED_ALERTS = Counter(
    "responder_truncated_alerts_total",
    "Alerts Alertmanager left out of webhooks (truncatedAlerts, over the receiver's max_alerts), "
    "by whether their group is fetched from its API (false: no alertmanager_url).",
    ["fetched"],
)
EVENTS_SKIPPED = Counter(
    "responder_decision_events_skipped_total",
    "Decision events not mirrored to Prefect (it was unreachable); the store keeps them all.",
)
PREFECT_BUSY_RETRIES = Counter(
    "responder_prefect_busy_retries_total",
    "Busy answers (503) of Prefect's API that Responder's client asked again soon.",
)
PREFECT_REACHABLE = Gauge(
    "responder_prefect_reachable", "1 if the leader's last call to Prefect's API succeeded."
)


def set_incidents(counts: dict[str, int]) -> None:
    """Set `responder_incidents` from the store's counts by state."""
    for state, count in counts.items():
        INCIDENTS.labels(state=state).set(count)
