"""Decisions as the operator API shows them: with their flow run's link and status in words."""

from __future__ import annotations

from typing import Any

from responder.runtime.service import Service
from responder.storage.decisions import run_status


def linked(service: Service, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decision rows with their flow run's Prefect UI link and status in words."""
    for row in rows:
        row["flow_run_url"] = service.flow_run_url(row.get("flow_run_id"))
        row["run_status"] = run_status(row)
    return rows


def waiting(row: dict[str, Any]) -> dict[str, Any]:
    """A run awaiting approval as operators see it: the alert, the rule, what will be done."""
    return {
        "decision_id": row["id"],
        "flow_run_id": row["flow_run_id"],
        "flow_run_url": row["flow_run_url"],
        "since": (row.get("approval") or {}).get("since"),
        "alert": {
            "alertname": row["alertname"],
            "fingerprint": row["incident"].partition("@")[0],
            "incident": row["incident"],
            "labels": row["labels"],
        },
        "rule": row["rule"],
        "reason": row["reason"],
        "flow": row["flow"],
        "parameters": row["parameters"],
        "key": row["guard_key"],
    }
