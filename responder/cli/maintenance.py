"""`responder maintenance add|list|remove`: maintenance windows through a running
Responder's API (`/api/v1/maintenance`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from responder.cli import client
from responder.cli.common import ConfigOption, console
from responder.cli.display import printable, utc

maintenance_app = typer.Typer(
    help="Maintenance windows: while one covers an alert, no rule remediates it.",
    no_args_is_help=True,
)


@maintenance_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. db-patching.")],
    reason: Annotated[str, typer.Option(help="Why; shown in every refusal.")],
    end: Annotated[str, typer.Option(help="When it ends (ISO 8601), e.g. 2026-12-06T04:00.")],
    start: Annotated[str | None, typer.Option(help="When it begins; default: now.")] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone of times without offset.")] = "UTC",
    every: Annotated[
        str | None, typer.Option("--every", help="An RFC 5545 RRULE: FREQ=WEEKLY;BYDAY=SU.")
    ] = None,
    match: Annotated[
        list[str] | None, typer.Option(help='A label matcher, e.g. env="prod" (repeatable).')
    ] = None,
    service: Annotated[list[str] | None, typer.Option(help="A service (repeatable).")] = None,
    host: Annotated[list[str] | None, typer.Option(help="A host (repeatable).")] = None,
    config: ConfigOption = None,
) -> None:
    """Add a maintenance window covering the alerts every selector given agrees on."""
    body: dict[str, Any] = {"name": name, "reason": reason, "end": end, "timezone": timezone}
    for key, value in (
        ("start", start),
        ("recurrence", every),
        ("match", match),
        ("services", service),
        ("hosts", host),
    ):
        if value:
            body[key] = value
    window = client.call(config, "POST", "/api/v1/maintenance", ok=(201,), json=body).json()
    console.print(
        f"added: {describe(window['window'])}", highlight=False, markup=False, soft_wrap=True
    )


@maintenance_app.command("list")
def list_windows(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every maintenance window, the catalog's and the API's."""
    windows = client.call(config, "GET", "/api/v1/maintenance").json()["windows"]
    if as_json:
        console.print_json(json.dumps(windows))
        return
    if not windows:
        console.print("no maintenance windows")
    for window in windows:
        console.print(describe(window), highlight=False, markup=False, soft_wrap=True)


@maintenance_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The window's name.")],
    config: ConfigOption = None,
) -> None:
    """Remove a window added through the API; what it refused is decided again."""
    client.call(config, "DELETE", f"/api/v1/maintenance/{name}")
    console.print(f"removed: {name}", highlight=False, markup=False)


def describe(window: dict[str, Any]) -> str:
    """One window on one line: name, when, what it covers, why."""
    if window["in_effect"]:
        when = f"in effect until {utc(window['in_effect_until'])}"
    elif window.get("next_start") is not None:
        when = f"next {utc(window['next_start'])}"
    else:
        when = "over"
    covers = [
        *window.get("match", []),
        *(f"{k}={v}" for k, v in window.get("labels", {}).items()),
        *(f"service {s}" for s in window.get("services", [])),
        *(f"host {h}" for h in window.get("hosts", [])),
    ]
    every = f", every {window['recurrence']}" if window.get("recurrence") else ""
    return printable(
        f"{window['name']} ({window['source']}): {when}{every}; "
        f"covers {', '.join(covers)}: {window['reason']}"
    )
