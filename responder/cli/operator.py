"""Operator commands: they call a running Responder's API (decisions, explain, pause,
resume, status, approvals, approve, reject, run)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from responder.cli import client
from responder.cli.common import ConfigOption, console, err_console
from responder.cli.display import describe, printable, utc, who

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
FlowRunArgument = Annotated[str, typer.Argument(help="The waiting flow run's id.")]


def decisions(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    verdict: Annotated[str | None, typer.Option(help="admitted, refused, duplicate, …")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show recent decisions from a running Responder, newest first."""
    params = {k: v for k, v in {"limit": limit, "rule": rule, "verdict": verdict}.items() if v}
    response = client.call(config, "GET", "/api/v1/decisions", params=params)
    rows = response.json()["decisions"]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        console.print(describe(row), highlight=False, markup=False, soft_wrap=True)


def explain(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint.")],
    config: ConfigOption = None,
) -> None:
    """Tell an alert's story: every decision about it, and how each rule judges it now."""
    body = client.call(config, "GET", f"/api/v1/explain/{fingerprint}").json()
    for row in body["decisions"]:
        console.print(describe(row), highlight=False, markup=False, soft_wrap=True)
    for incident in body.get("incidents", []):
        console.print(
            f"incident {printable(incident['incident'])}: {incident_state(incident)}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for alert in body["held"]:
        console.print(f"still firing: {alert['incident']}", highlight=False, soft_wrap=True)
        for rule in alert["rules"]:
            verdict = "holds" if rule["holds"] else printable(rule["failure"])
            console.print(
                f"  {rule['rule']}: {verdict}", highlight=False, markup=False, soft_wrap=True
            )


def pause(
    reason: Annotated[str, typer.Option(help="Why; shown in every refusal.")],
    config: ConfigOption = None,
) -> None:
    """Stop admitting remediations, cluster-wide (the kill switch). Active runs go on."""
    by = client.login_name()
    response = client.call(config, "POST", "/api/v1/pause", json={"reason": reason, "by": by})
    console.print(f"paused: {response.json()['pause']['reason']}", highlight=False)


def resume(config: ConfigOption = None) -> None:
    """Admit remediations again."""
    client.call(config, "POST", "/api/v1/resume")
    console.print("resumed")


def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the pause switch, held keys and mutexes, incidents by state (and the waiting
    ones), and cooling keys."""
    body = client.call(config, "GET", "/api/v1/status").json()
    if as_json:
        console.print_json(json.dumps(body))
        return
    pause = body["pause"]
    console.print(
        f"paused: {pause['reason']} (by {who(pause)})" if pause else "admitting",
        highlight=False,
    )
    waiting = {row["decision_id"] for row in body.get("awaiting_approval", [])}
    console.print(f"held ({len(body['leases'])}):", highlight=False)
    for lease in body["leases"]:
        awaiting = "  awaiting approval" if lease["decision_id"] in waiting else ""
        console.print(
            f"  {printable(lease['name'])}  decision {lease['decision_id']}  "
            f"flow run {lease['flow_run_id'] or '-'}  until {utc(lease['expires_at'])}{awaiting}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    show_incidents(body.get("incidents"))
    console.print(f"cooling down ({len(body['cooldowns'])}):", highlight=False)
    for cooldown in body["cooldowns"]:
        console.print(
            f"  {printable(cooldown['guard_key'])}  until {utc(cooldown['until'])}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def incident_state(incident: dict[str, Any]) -> str:
    """An incident's remediation state in words: what it waits for, what runs, how it ended,
    and when its ladder tries again."""
    words = _state_words(incident)
    attempt = incident.get("next_attempt")
    if attempt and incident.get("firing", True):
        words += f"; next attempt of {attempt['rule']} at {utc(attempt['at'])}"
    return words


def _state_words(incident: dict[str, Any]) -> str:
    state = incident["state"] if incident.get("firing", True) else "resolved"
    if state == "waiting":
        on = incident["waiting_on"]
        if incident.get("block"):
            on += f" {incident['block']}"
            if incident.get("holder"):
                on += f" (decision {incident['holder']})"
        if incident.get("until"):
            on += f" until {utc(incident['until'])}"
        return f"waiting on {on}"
    if state == "running" and incident.get("decision_id"):
        return f"running (decision {incident['decision_id']})"
    if state == "done" and incident.get("outcome"):
        return f"done ({incident['outcome']})"
    return str(state)


def show_incidents(incidents: dict[str, Any] | None) -> None:
    """Counts by state, and the incidents waiting."""
    if not incidents:
        return
    counts = "  ".join(f"{state} {n}" for state, n in incidents["counts"].items())
    console.print(f"incidents: {counts}", highlight=False)
    for incident in incidents["waiting"]:
        console.print(
            f"  {printable(incident['incident'])}  {printable(incident['rule'] or '-')}  "
            f"{printable(incident_state({**incident, 'state': 'waiting'}))}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def approvals(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the runs waiting for approval: the alert, the rule and what will be done."""
    rows = client.call(config, "GET", "/api/v1/approvals").json()["approvals"]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no run is awaiting approval")
    for row in rows:
        for line in _waiting(row):
            console.print(line, highlight=False, markup=False, soft_wrap=True)


def _waiting(row: dict[str, Any]) -> list[str]:
    """A run awaiting approval, in lines: the run, the alert, the rule, what will be done."""
    alert = row["alert"]
    labels = ",".join(f"{k}={printable(v)}" for k, v in sorted(alert["labels"].items()))
    since = f"since {utc(row['since'])}" if row.get("since") else ""
    parameters = ", ".join(f"{k}={printable(v)}" for k, v in row["parameters"].items())
    return [
        f"flow run {row['flow_run_id']}  decision #{row['decision_id']}  {since}",
        f"    alert {printable(alert['alertname'])}{{{labels}}}  "
        f"fingerprint {printable(alert['fingerprint'])}",
        f"    rule {printable(row['rule'] or '-')}: {printable(row['reason'])}",
        f"    will run {printable(row['flow'])}({parameters})  key {printable(row['key'])}",
        f"    {row['flow_run_url'] or ''}",
    ]


def approve(
    flow_run: FlowRunArgument,
    comment: Annotated[str, typer.Option(help="Kept with the approval.")] = "",
    config: ConfigOption = None,
) -> None:
    """Approve a run waiting for approval, as the operator your token names."""
    path = f"/api/v1/approvals/{flow_run}/approve"
    approval = client.call(config, "POST", path, json={"comment": comment}).json()["approval"]
    console.print(f"approved by {printable(approval['by'])}", highlight=False, markup=False)


def reject(
    flow_run: FlowRunArgument,
    reason: Annotated[str, typer.Option(help="Why; the run ends Cancelled with it.")],
    config: ConfigOption = None,
) -> None:
    """Reject a run waiting for approval, as the operator your token names."""
    path = f"/api/v1/approvals/{flow_run}/reject"
    approval = client.call(config, "POST", path, json={"reason": reason}).json()["approval"]
    console.print(f"rejected by {printable(approval['by'])}", highlight=False, markup=False)


def run(
    flow: Annotated[str, typer.Argument(help="The flow to start (see `responder catalog`).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE (VALUE may be JSON).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why; kept in the decision log.")] = "",
    by: Annotated[
        str, typer.Option(help="Who asks, for a shared token (the log keeps your token's name).")
    ] = "",
    key: Annotated[str | None, typer.Option(help="Guard key (default: flow+params).")] = None,
    mutex: Annotated[list[str] | None, typer.Option(help="A lock name; repeatable.")] = None,
    approval: Annotated[
        bool, typer.Option(help="Wait for approval (`responder approve`, or the Prefect UI).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Start a flow by hand, through the guard of a running Responder."""
    body = {
        "parameters": _parameters(param or []),
        "reason": reason or "started by hand",
        "requested_by": by or client.login_name(),
        "key": key,
        "mutex": mutex or [],
        "approval": approval,
    }
    path = f"/api/v1/catalog/flows/{flow}/runs"
    response = client.call(config, "POST", path, ok=(202, 409), json=body)
    answer = response.json()
    if "decision" not in answer:
        console.print(f"accepted (inbox {answer['inbox_id']}); not decided yet")
        return
    console.print(describe(answer["decision"]), highlight=False, markup=False, soft_wrap=True)
    if response.status_code == 409:
        raise typer.Exit(1)


def _parameters(items: list[str]) -> dict[str, Any]:
    """`--param NAME=VALUE` options as parameters: VALUE as JSON, else as a string."""
    parameters: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            err_console.print(f"[red]error:[/red] --param {item!r} is not NAME=VALUE")
            raise typer.Exit(2)
        try:
            parameters[name] = json.loads(value)
        except ValueError:
            parameters[name] = value
    return parameters
