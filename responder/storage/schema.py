"""Responder's tables: the one place the schema is declared (alembic's migrations follow it).

Uniqueness in the schema, not application checks, makes admission atomic.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False),
    Column("source", String(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("processed", Boolean, nullable=False, default=False),
    Index("ix_inbox_pending", "processed", "id"),
    # The events of the last minutes, which a new leader's event rules recall.
    Index("ix_inbox_received_at", "received_at"),
)

# Items (alerts, events) of an unprocessed inbox row already handled by committed engine
# transactions: a big webhook is decided over several short transactions, and a crash
# resumes after them. A table of its own: updating the inbox row would rewrite its body.
inbox_progress = Table(
    "inbox_progress",
    metadata,
    Column("inbox_id", Integer, primary_key=True, autoincrement=False),
    Column("handled", Integer, nullable=False),
)

# One row per (fingerprint, startsAt, status) ever handled: the alert-identity ledger.
alert_events = Table(
    "alert_events",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("starts_at", String(40), primary_key=True),
    Column("status", String(10), primary_key=True),
    Column("inbox_id", Integer, nullable=False),
    Column("seen_at", Float, nullable=False),
)

# Alerts currently firing, so the engine can rebuild its facts after a restart.
firing_alerts = Table(
    "firing_alerts",
    metadata,
    Column("incident", String(120), primary_key=True),
    Column("alert", Text, nullable=False),
)

# The partial indexes' condition; queries say it literally (a bound parameter would not
# let the planners use them).
ADMITTED = text("verdict = 'admitted'")


def only(where: Any) -> dict[str, Any]:
    """An index's keyword arguments making it partial: only the rows `where` holds for."""
    return {"sqlite_where": where, "postgresql_where": where}


ADMITTED_ONLY = only(ADMITTED)


def present(column: str) -> dict[str, Any]:
    """A partial index's condition: only the rows where `column` has a value. Most decisions
    (an alert no rule acts on) have no rule, flow, run, service or approval; leaving them out
    spares every insert of a storm four index writes. The planners use such an index for
    `column = ...` and `column IN (...)`, which imply it (tests/storage/test_query_plans.py).
    """
    return only(text(f"{column} IS NOT NULL"))


decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("inbox_id", Integer, nullable=True),
    Column("incident", String(120), nullable=False),
    Column("alertname", Text, nullable=False),
    Column("alert_status", String(10), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("rule", String(64), nullable=True),
    Column("flow", String(128), nullable=True),
    Column("parameters", JSON(none_as_null=True), nullable=True),
    Column("guard_key", Text, nullable=True),
    Column("verdict", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("flow_run_id", String(36), nullable=True),
    Column("flow_run_state", String(24), nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("detail", Text, nullable=True),
    # Which guard check refused (key_active, mutex_held, cooldown, budget, ...).
    Column("refusal", String(24), nullable=True),
    # The guard policy the decision was admitted under (cooldowns apply when it ends).
    Column("policy", JSON(none_as_null=True), nullable=True),
    # The Alertmanager silence set while the remediation runs, and whether it was lifted.
    Column("silence_id", String(64), nullable=True),
    Column("silence_lifted", Boolean, nullable=False, default=False),
    # The alert's `service` label, for the per-service blast radius.
    Column("service", String(256), nullable=True),
    # A run that asks a person: `APPROVAL_STATES`; `approval` says who answered, how and when.
    Column("approval_state", String(16), nullable=True),
    Column("approval", JSON(none_as_null=True), nullable=True),
    Index("ix_decisions_flow_run", "flow_run_id", **present("flow_run_id")),
    Index("ix_decisions_approval_state", "approval_state", **present("approval_state")),
    Index("ix_decisions_service", "service", **present("service")),
    Index("ix_decisions_rule", "rule", "id", **present("rule")),
    Index("ix_decisions_flow_created", "flow", "created_at", **present("flow")),
    Index("ix_decisions_incident", "incident"),
    # The guard counts admitted decisions (attempts, budgets) once per decision: partial
    # indexes of the admitted ones keep that from scanning every decision ever recorded.
    Index("ix_decisions_admitted_incident", "incident", "rule", **ADMITTED_ONLY),
    Index("ix_decisions_admitted_flow", "flow", "created_at", **ADMITTED_ONLY),
    Index("ix_decisions_admitted_created", "created_at", **ADMITTED_ONLY),
)

# Names held by active remediations: `key:<guard key>` and `mutex:<lock name>`.
leases = Table(
    "leases",
    metadata,
    # Names are rendered from hostile labels and may be long: index their digest.
    Column("key_digest", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("decision_id", Integer, nullable=False, index=True),
    Column("flow_run_id", String(36), nullable=True),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

cooldowns = Table(
    "cooldowns",
    metadata,
    Column("key_digest", String(64), primary_key=True),
    Column("guard_key", Text, nullable=False),
    Column("until", Float, nullable=False),
    Column("decision_id", Integer, nullable=False),
)

# Facts asserted by rules, configuration or events, so the engine can rebuild them.
facts = Table(
    "facts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("source", String(128), nullable=False),
)

# Operator switches that every replica obeys, such as the global pause.
control = Table(
    "control",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)


# One row per firing incident (fingerprint + startsAt): where its remediation stands.
# `state`: unmatched (no rule acts), waiting (on `waiting_on`: a refusal code, the guard
# name `block` and its `holder`, or a time `until`), running (`decision_id`), done
# (`outcome`), exhausted (max_attempts). `due` asks the engine loop to decide it again.
# `decision_id`: the running decision, or the refusal a waiting (or exhausted) one is at.
incidents = Table(
    "incidents",
    metadata,
    Column("incident", String(120), primary_key=True),
    Column("alertname", Text, nullable=False),
    Column("firing", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("rule", String(64), nullable=True),
    Column("decision_id", Integer, nullable=True),
    Column("waiting_on", String(24), nullable=True),
    Column("block", Text, nullable=True),
    Column("block_digest", String(64), nullable=True),
    Column("holder", Integer, nullable=True),
    Column("until", Float, nullable=True),
    Column("outcome", String(24), nullable=True),
    Column("due", Boolean, nullable=False, default=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_incidents_state", "state", "firing"),
    Index("ix_incidents_decision", "decision_id"),
)

# Durable timers: what is to happen at a time, kept in the store so that a restart, a reload
# or a new leader fires it still. `kind` says what: `retry`, the next attempt of `rule` for
# `incident` after decision `decision_id`'s run ended (`decision.escalation`); `settle`;
# `absence` (an event rule's follower awaited; `incident` is the awaited key) and `schedule`
# (a schedule rule's next tick).
timers = Table(
    "timers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("incident", String(120), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("due_at", Float, nullable=False, index=True),
    Column("decision_id", Integer, nullable=True),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # An event timer's payload: an absence's first event (JSON); None for the others.
    Column("payload", Text, nullable=True),
    UniqueConstraint("kind", "incident", "rule", name="uq_timers_what"),
)


def key_digest(key: str) -> str:
    """A guard name's digest: names are rendered from hostile labels and may be long."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# Maintenance windows added through the API or the CLI (the catalog's are in its file):
# `spec` is the window as `decision.maintenance.MaintenanceWindow` validated it.
maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)
