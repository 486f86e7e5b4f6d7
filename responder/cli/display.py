"""How operator commands print what the API answers: one line per fact, and nothing an
alert's labels could use to forge output or drive the terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc(epoch: float) -> str:
    """A moment as UTC date and time, to the second."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def printable(value: object) -> str:
    """`value` on one line, its control and format characters (line breaks, terminal escapes,
    bidi overrides) escaped: alert labels must not forge output or drive the terminal.

    Print it with `markup=False` too, or a label such as `[/red]` is rich markup.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def who(record: dict[str, Any]) -> str:
    """Who did it: the name the credentials carry, and the one the caller gave if another
    (without credentials, on loopback, the given name is all there is)."""
    by, declared = record.get("by") or "-", record.get("declared_by")
    return f"{by}, says {declared}" if declared else by


def describe(row: dict[str, Any]) -> str:
    """One decision as a short block: the alert, the rule and verdict, the flow run."""
    labels = row["labels"]
    # The last two: manual runs (who asked, by their credentials; who they said they were).
    keys = ("instance", "service", "severity", "flow", "requested_by", "declared_by")
    shown = ",".join(f"{k}={printable(labels[k])}" for k in keys if k in labels)
    when = utc(row["created_at"])
    alertname, reason = printable(row["alertname"]), printable(row["reason"])
    fingerprint = printable((row.get("incident") or "").partition("@")[0]) or "-"
    lines = [
        f"#{row['id']}  {when}  {alertname}{{{shown}}} {row['alert_status']}  "
        f"fingerprint {fingerprint}",
        f"    {row['rule'] or '(no rule)'} → {row['verdict']}: {reason}",
    ]
    if row["flow_run_id"] or row["flow_run_state"]:
        state = row.get("run_status") or row["flow_run_state"] or "running"
        detail = f" ({printable(row['detail'])})" if row.get("detail") else ""
        lines.append(
            f"    flow run {row['flow_run_id'] or '-'} {state}{detail}  {row['flow_run_url'] or ''}"
        )
    approval = row.get("approval") or {}
    if approval.get("by"):
        verdict = "approved" if approval.get("approved") else "rejected"
        comment = f": {printable(approval['comment'])}" if approval.get("comment") else ""
        lines.append(
            f"    {verdict} by {printable(approval['by'])} via {approval.get('via')}{comment}"
        )
    return "\n".join(lines)
