"""Remediation flows and the atomic operations they are built from.

`REMEDIATIONS` names every flow a rule may run, as `module:attribute`, so that rule checking
and the engine know the names without importing Prefect.
"""

from __future__ import annotations

REMEDIATIONS: dict[str, str] = {
    "restart-service": "flows.remediations:restart_service",
    "http-call": "flows.remediations:http_call",
}

__all__ = ["REMEDIATIONS"]
