"""A flow run's story in the Prefect UI: its name, its tags, and the artifact that says why.

An SRE who opens a run in the Prefect UI should not need Responder's API to learn which alert
it answers, which rule chose it, what the guard checked, and what was tried before. The
dispatcher names and tags each run when it creates it, writes the dispatch artifact right
after, and a second artifact when the run's final state is seen.

Labels, annotations and generator URLs are hostile data: every value is escaped before it
becomes markdown, and only http(s) URLs become links.
"""

from __future__ import annotations

import html
import re
import time
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from responder.control.runs import ActiveRun
from responder.events.webhook import Alert
from responder.storage.decisions import run_status

# Prefect's artifact keys: lower-case letters, digits and dashes.
DISPATCH_ARTIFACT = "responder-dispatch"
OUTCOME_ARTIFACT = "responder-outcome"
TAG_LENGTH = 100
NAME_LENGTH = 120
# Values never start a line, so only inline syntax needs escaping (tables: `|`).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()|~])")


def text(value: object, limit: int = 300) -> str:
    """A value as inert markdown text: one line, HTML and markdown syntax escaped."""
    flat = " ".join(str(value).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return html.escape(_MARKDOWN.sub(r"\\\1", flat), quote=False)


def link(label: str, url: str) -> str:
    """A markdown link without credentials, or the escaped label alone when `url` is not
    http(s)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return text(label)
    # A user and password in the URL (a setting's, an alert's) are not for the UI's readers.
    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    safe = urllib.parse.quote(url, safe=":/?&=%#+,;@~!$'*")
    return f"[{text(label)}]({safe.replace('(', '%28').replace(')', '%29')})"


def run_name(run: ActiveRun) -> str:
    """What the run does and where: `restart-service · ServiceDown checkout@host-2`."""
    labels = run.labels
    where = "@".join(v for v in (labels.get("service"), labels.get("instance")) if v)
    name = f"{run.flow} · {run.alertname or run.rule}" + (f" {where}" if where else "")
    return " ".join(name.split())[:NAME_LENGTH]


def run_tags(run: ActiveRun) -> list[str]:
    """Tags to filter runs by in the Prefect UI; label values are cut to Prefect's size."""
    fingerprint = run.incident.partition("@")[0]
    tags = [
        "responder",
        f"rule:{run.rule}",
        f"alertname:{run.alertname}",
        f"key:{run.guard_key}",
        f"fingerprint:{fingerprint}",
        f"incident:{run.incident}",
        f"decision:{run.decision_id}",
    ]
    return [tag[:TAG_LENGTH] for tag in tags]


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _rows(heading: str, pairs: Iterable[tuple[str, object]]) -> list[str]:
    lines = [f"| {heading} | value |", "|---|---|"]
    lines += [f"| {text(name, 100)} | {text(_shown(value))} |" for name, value in pairs]
    return lines


def dispatch_story(
    run: ActiveRun,
    decision: dict[str, Any],
    alert: Alert | None,
    history: list[dict[str, Any]],
    alertmanager_url: str | None,
) -> str:
    """The artifact written at dispatch: the alert, the rule and why, the guard, the past."""
    policy = decision.get("policy") or {}
    lines = [f"# {text(run_name(run))}", ""]
    lines += [
        f"Admitted by Responder as decision **#{run.decision_id}** of rule "
        f"**{text(run.rule)}** at {_when(decision.get('created_at'))}.",
        "",
        f"**Why:** {text(decision.get('reason', ''), 1000)}",
        "",
        "## The alert",
        "",
    ]
    labels = alert.labels if alert is not None else run.labels
    lines += _rows("label", sorted(labels.items()))
    if alert is not None:
        lines += ["", f"Firing since {alert.starts_at.isoformat()}; incident `{alert.incident}`."]
        if alert.annotations:
            lines += ["", "**Annotations**", ""]
            lines += _rows("annotation", sorted(alert.annotations.items()))
        links = []
        if alert.generator_url:
            links.append(link("Prometheus graph of the alert's expression", alert.generator_url))
        if alertmanager_url:
            matcher = f'{{alertname="{alert.alertname}"}}'
            query = urllib.parse.urlencode({"filter": matcher})
            url = f"{alertmanager_url}/#/alerts?{query}"
            links.append(link("this alert in Alertmanager", url))
        if links:
            lines += ["", " · ".join(links)]
    lines += ["", "## What the guard checked", ""]
    checks: list[tuple[str, object]] = [("key", run.guard_key)]
    for name, unit in (("mutex", ""), ("cooldown", " s"), ("cooldown_failed", " s")):
        if policy.get(name) not in (None, []):
            checks.append((name, f"{_shown(policy[name])}{unit}"))
    if policy.get("silence"):
        checks.append(("silence", "the alert is silenced in Alertmanager while the run lasts"))
    lines += _rows("check", checks)
    lines += ["", "## Parameters", ""]
    lines += _rows("parameter", sorted(run.parameters.items()))
    earlier = [row for row in history if row["id"] != run.decision_id]
    lines += ["", "## Earlier decisions about this alert", ""]
    if not earlier:
        lines.append("None: this is the first.")
    else:
        lines += ["| # | when | rule | verdict | run | reason |", "|---|---|---|---|---|---|"]
        for row in earlier[:20]:
            state = row.get("flow_run_state") or run_status(row) or "-"
            lines.append(
                f"| {row['id']} | {_when(row['created_at'])} | {text(row.get('rule') or '-')} "
                f"| {text(row['verdict'])} | {text(state)} | {text(row['reason'], 200)} |"
            )
    return "\n".join(lines) + "\n"


def outcome_story(decision_id: int, state: str, detail: str | None) -> str:
    """The artifact written when the run's final state is seen."""
    lines = [
        f"# Outcome of decision #{decision_id}: {text(state)}",
        "",
        f"Seen by Responder at {_when(time.time())}. The key is released and its cooldown "
        "has started; the outcome is a fact the rules see.",
    ]
    if detail:
        lines += ["", f"**Detail:** {text(detail, 1000)}"]
    return "\n".join(lines) + "\n"
