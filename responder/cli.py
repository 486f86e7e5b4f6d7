"""The `responder` command: thin; flags become settings, settings become a service."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from responder import tls
from responder.exceptions import ResponderError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (default: config/responder.yaml)."),
]


def _settings(config: Path | None, **overrides: Any) -> Any:
    from responder.settings import load_settings

    clean = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(config, **clean)


def _fail(exc: ResponderError) -> typer.Exit:
    # Escaped: the message quotes what the user wrote, which may look like markup.
    err_console.print(
        f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(1)


HostOption = Annotated[str | None, typer.Option(help="Bind address of the webhook receiver.")]
PortOption = Annotated[int | None, typer.Option(help="Port of the webhook receiver.")]


def _http_server(settings: Any, service: Any) -> Any:
    """The webhook receiver and API of `service`, as a uvicorn server."""
    import uvicorn

    from responder.intake import http_limits
    from responder.intake.app import create_app

    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        # uvicorn believes X-Forwarded-For from loopback by default; only configured proxies.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        **http_limits.uvicorn_options(),
        **tls.server_options(
            settings.tls_certfile, settings.tls_keyfile, settings.tls_client_ca_file
        ),
    )
    return uvicorn.Server(config)


def _exit_on_signal(_signum: int, _frame: Any) -> None:
    # A stop that was asked for and done cleanly is a success (no `make: Error 143`).
    raise SystemExit(0)


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Not every HTTP call to Prefect, nor alembic's plugin set-up: they drown what matters.
    for noisy in ("httpx", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def up(config: ConfigOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Start a local Prefect server, serve the flows and receive Alertmanager webhooks."""
    from responder.runtime.service import Service
    from responder.runtime.supervisor import Supervisor

    _log_to_stderr()
    try:
        settings = _settings(config, host=host, port=port)
        external = settings.prefect_api_url or os.environ.get("PREFECT_API_URL")
        supervisor = Supervisor(
            settings.data_dir, settings.prefect_port, external, settings.runner_limit
        )
        service = Service(settings, prefect_api_url=supervisor.api_url)
    except ResponderError as exc:
        raise _fail(exc) from None
    console.print("Starting Prefect…" if not external else f"Using Prefect at {external}")
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM handler that would kill this process before it stops its children (systemd
    # and `kill` send SIGTERM). Make it an exit that runs the `finally` below.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        supervisor.start()
        server = _http_server(settings, service)
        asyncio.run(
            _serve_until_a_child_dies(server, supervisor, lambda: _print_banner(settings, service))
        )
    except ResponderError as exc:
        raise _fail(exc) from None
    finally:
        console.print("Stopping…")
        supervisor.stop()


@app.command()
def serve(config: ConfigOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Run one Responder replica: the webhook receiver and, while it leads, the engine.

    For several replicas on one PostgreSQL database (`database_url`), with Prefect and its
    workers run separately (`prefect_api_url` or PREFECT_API_URL; `responder deploy`).
    `responder up` is this plus a local Prefect server and flow runner.
    """
    from responder.runtime.service import Service

    _log_to_stderr()
    try:
        settings = _settings(config, host=host, port=port)
        api_url = settings.prefect_api_url or os.environ.get("PREFECT_API_URL")
        service = Service(settings, prefect_api_url=api_url)
    except ResponderError as exc:
        raise _fail(exc) from None
    _http_server(settings, service).run()


async def _serve_until_a_child_dies(
    server: Any, supervisor: Any, on_ready: Callable[[], None]
) -> None:
    """Serve until stopped or a child dies; `on_ready` once `/readyz` would answer 200."""

    async def watch() -> None:
        announced = False
        while not server.should_exit:
            if not announced and server.started and await _ready(server):
                on_ready()
                announced = True
            dead = supervisor.dead_children()
            if dead:
                err_console.print(f"[red]{dead[0].name} exited; see {dead[0].log_file}[/red]")
                server.should_exit = True
            await asyncio.sleep(1.0 if announced else 0.2)

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    finally:
        watcher.cancel()


async def _ready(server: Any) -> bool:
    """What the server's own `/readyz` answers, asked in-process (no socket, no TLS)."""
    transport = httpx.ASGITransport(app=server.config.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://responder") as client:
        return (await client.get("/readyz")).status_code == 200


def _print_banner(settings: Any, service: Any) -> None:
    http_config: list[str] = []  # the lines under `http_config:`, two spaces per level
    if settings.bearer_token is not None:
        http_config += ["authorization:", "  credentials: <your bearer token>"]
    elif settings.basic_username is not None:
        http_config += [
            "basic_auth:",
            f"  username: {settings.basic_username}",
            "  password: <your password>",
        ]
    if settings.tls_enabled:
        http_config += ["tls_config:", "  ca_file: <the CA that signed tls_certfile>"]
        if settings.tls_client_ca_file is not None:
            http_config += [
                "  cert_file: <a client certificate signed by tls_client_ca_file>",
                "  key_file: <its key>",
            ]
    auth = "".join(f"\n          {line}" for line in http_config)
    console.print(
        f"\n[bold]Responder is up.[/bold] "
        f"Rules: {len(service.book.rules)} from {settings.rules_dir}/\n"
        f"  Webhook URL:  {settings.webhook_url}\n"
        f"  Prefect UI:   {service.dispatcher.ui_url if service.dispatcher else '-'}\n"
        f"  Decisions:    responder decisions\n\n"
        "Paste into alertmanager.yml:\n\n"
        f"receivers:\n  - name: responder\n    webhook_configs:\n"
        f"      - url: {settings.webhook_url}\n        send_resolved: true\n"
        f"        http_config:{auth or ' {}'}\n\n"
        "Press Ctrl-C to stop.\n",
        highlight=False,
        markup=True,
        soft_wrap=True,  # a wrapped line would break the YAML
    )


@app.command()
def check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Rule files or directories.")] = None,
    config: ConfigOption = None,
) -> None:
    """Validate rule files and YAML flows; name the file, line and problem of the first error."""
    from flows.dsl import load_flow_files
    from flows.operations import all_operations
    from responder.decision.rules import load_rules
    from responder.runtime.service import known_flows

    try:
        flows = load_flow_files(operations=set(all_operations()))
        targets = paths or [_settings(config).rules_dir]
        book = load_rules(targets, known_flows())
    except ResponderError as exc:
        raise _fail(exc) from None
    for name, flow_source in flows.items():
        console.print(f"ok  flow {name:<27} {flow_source.file}", highlight=False, soft_wrap=True)
    for rule, source in zip(book.rules, book.sources, strict=True):
        console.print(
            f"ok  {rule.name:<32} {source.file}:{source.line}  → {_does(rule)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"{len(book.rules)} rules and {len(flows)} YAML flows valid")


def _does(rule: Any) -> str:
    parts = [f"run {rule.run.flow}"] if rule.run else []
    if rule.assert_:
        parts.append(f"assert {rule.assert_.fact}")
    parts.extend(f"retract {c.fact}" for c in rule.retract)
    return ", ".join(parts)


@app.command()
def schema() -> None:
    """Print the JSON Schema of rule files, for editors (rules/rules.schema.json)."""
    from responder.decision.rules import rule_file_schema

    print(json.dumps(rule_file_schema(), indent=2, sort_keys=True))


@app.command()
def reference(
    page: Annotated[str, typer.Argument(help="settings or operations")],
) -> None:
    """Print a reference page written from the code (docs/settings.md and
    docs/operations-reference.md are its output)."""
    from responder.authoring.reference import PAGES
    from responder.authoring.reference import page as reference_page

    if page not in PAGES:
        err_console.print(f"error: no reference page {page!r}; pages: {', '.join(PAGES)}")
        raise typer.Exit(2)
    print(reference_page(page), end="")


@app.command("test")
def test_rules(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Test files or directories (default rules/tests).")
    ] = None,
) -> None:
    """Run rule test files: alerts and events over time in, expected decisions and facts out."""
    from responder.authoring.ruletest import run_test_file
    from responder.runtime.service import known_flows

    files: list[Path] = []
    for path in paths or [Path("rules/tests")]:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    if not files:
        err_console.print("error: no rule test files found")
        raise typer.Exit(1)
    failed = 0
    for file in files:
        try:
            outcomes = asyncio.run(run_test_file(file, known_flows()))
        except ResponderError as exc:
            raise _fail(exc) from None
        for outcome in outcomes:
            if outcome.passed:
                console.print(f"ok    {file}: {outcome.name}", highlight=False, soft_wrap=True)
            else:
                failed += 1
                console.print(f"FAIL  {file}: {outcome.name}", highlight=False, soft_wrap=True)
                console.print(outcome.diff, highlight=False, markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def decisions(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    verdict: Annotated[str | None, typer.Option(help="admitted, refused, duplicate, …")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show recent decisions from a running Responder, newest first."""
    params = {k: v for k, v in {"limit": limit, "rule": rule, "verdict": verdict}.items() if v}
    response = _call(config, "GET", "/api/v1/decisions", params=params)
    rows = response.json()["decisions"]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        console.print(_describe(row), highlight=False, markup=False, soft_wrap=True)


@app.command()
def explain(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint.")],
    config: ConfigOption = None,
) -> None:
    """Tell an alert's story: every decision about it, and how each rule judges it now."""
    body = _call(config, "GET", f"/api/v1/explain/{fingerprint}").json()
    for row in body["decisions"]:
        console.print(_describe(row), highlight=False, markup=False, soft_wrap=True)
    for alert in body["held"]:
        console.print(f"still firing: {alert['incident']}", highlight=False, soft_wrap=True)
        for rule in alert["rules"]:
            verdict = "holds" if rule["holds"] else _printable(rule["failure"])
            console.print(
                f"  {rule['rule']}: {verdict}", highlight=False, markup=False, soft_wrap=True
            )


@app.command()
def simulate(
    payload: Annotated[Path, typer.Argument(help="An Alertmanager webhook body (JSON).")],
    config: ConfigOption = None,
) -> None:
    """Show what the rules would do with a webhook; nothing is dispatched or stored."""
    from responder.authoring.simulation import simulate as run_simulation

    try:
        settings = _settings(config)
        lines = asyncio.run(run_simulation(settings, payload.read_bytes()))
    except ResponderError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        err_console.print(f"error: cannot read {payload}: {exc}")
        raise typer.Exit(1) from None
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True, markup=False)


@app.command()
def pause(
    reason: Annotated[str, typer.Option(help="Why; shown in every refusal.")],
    config: ConfigOption = None,
) -> None:
    """Stop admitting remediations, cluster-wide (the kill switch). Active runs go on."""
    by = _operator()
    response = _call(config, "POST", "/api/v1/pause", json={"reason": reason, "by": by})
    console.print(f"paused: {response.json()['pause']['reason']}", highlight=False)


@app.command()
def resume(config: ConfigOption = None) -> None:
    """Admit remediations again."""
    _call(config, "POST", "/api/v1/resume")
    console.print("resumed")


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the pause switch, held keys and mutexes, and cooling keys."""
    body = _call(config, "GET", "/api/v1/status").json()
    if as_json:
        console.print_json(json.dumps(body))
        return
    pause = body["pause"]
    console.print(
        f"paused: {pause['reason']} (by {_who(pause)})" if pause else "admitting",
        highlight=False,
    )
    waiting = {row["decision_id"] for row in body.get("awaiting_approval", [])}
    console.print(f"held ({len(body['leases'])}):", highlight=False)
    for lease in body["leases"]:
        awaiting = "  awaiting approval" if lease["decision_id"] in waiting else ""
        console.print(
            f"  {_printable(lease['name'])}  decision {lease['decision_id']}  "
            f"flow run {lease['flow_run_id'] or '-'}  until {_utc(lease['expires_at'])}{awaiting}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    console.print(f"cooling down ({len(body['cooldowns'])}):", highlight=False)
    for cooldown in body["cooldowns"]:
        console.print(
            f"  {_printable(cooldown['guard_key'])}  until {_utc(cooldown['until'])}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command()
def approvals(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the runs waiting for approval: the alert, the rule and what will be done."""
    rows = _call(config, "GET", "/api/v1/approvals").json()["approvals"]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no run is awaiting approval")
    for row in rows:
        alert = row["alert"]
        labels = ",".join(f"{k}={_printable(v)}" for k, v in sorted(alert["labels"].items()))
        since = f"since {_utc(row['since'])}" if row.get("since") else ""
        parameters = ", ".join(f"{k}={_printable(v)}" for k, v in row["parameters"].items())
        for line in (
            f"flow run {row['flow_run_id']}  decision #{row['decision_id']}  {since}",
            f"    alert {_printable(alert['alertname'])}{{{labels}}}  "
            f"fingerprint {_printable(alert['fingerprint'])}",
            f"    rule {_printable(row['rule'] or '-')}: {_printable(row['reason'])}",
            f"    will run {_printable(row['flow'])}({parameters})  key {_printable(row['key'])}",
            f"    {row['flow_run_url'] or ''}",
        ):
            console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def approve(
    flow_run: Annotated[str, typer.Argument(help="The waiting flow run's id.")],
    comment: Annotated[str, typer.Option(help="Kept with the approval.")] = "",
    config: ConfigOption = None,
) -> None:
    """Approve a run waiting for approval, as the operator your token names."""
    body = _call(config, "POST", f"/api/v1/approvals/{flow_run}/approve", json={"comment": comment})
    approval = body.json()["approval"]
    console.print(f"approved by {_printable(approval['by'])}", highlight=False, markup=False)


@app.command()
def reject(
    flow_run: Annotated[str, typer.Argument(help="The waiting flow run's id.")],
    reason: Annotated[str, typer.Option(help="Why; the run ends Cancelled with it.")],
    config: ConfigOption = None,
) -> None:
    """Reject a run waiting for approval, as the operator your token names."""
    body = _call(config, "POST", f"/api/v1/approvals/{flow_run}/reject", json={"reason": reason})
    approval = body.json()["approval"]
    console.print(f"rejected by {_printable(approval['by'])}", highlight=False, markup=False)


def _call(
    config: Path | None, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any
) -> httpx.Response:
    """Call a running Responder's API with the configured credentials; exit on failure."""
    try:
        settings = _settings(config)
    except ResponderError as exc:
        raise _fail(exc) from None
    base = settings.base_url
    headers = {}
    auth = None
    # What the operator API takes (responder.intake.auth): your own token ($RESPONDER_TOKEN, one of
    # the named operators'), else operator_token, else the webhook's.
    own = os.environ.get("RESPONDER_TOKEN")
    token = (
        settings.operator_token if settings.operator_token is not None else settings.bearer_token
    )
    if own:
        headers["authorization"] = f"Bearer {own}"
    elif token is not None:
        headers["authorization"] = f"Bearer {token.get_secret_value()}"
    elif settings.basic_username is not None and settings.basic_password is not None:
        auth = (settings.basic_username, settings.basic_password.get_secret_value())
    try:
        response = httpx.request(
            method,
            f"{base}{path}",
            headers=headers,
            auth=auth,
            timeout=10,
            verify=tls.client_context(settings.tls_certfile) if settings.tls_enabled else True,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        err_console.print(f"[red]error:[/red] cannot reach Responder at {base}: {exc}")
        raise typer.Exit(1) from None
    if response.status_code not in ok:
        err_console.print(f"[red]error:[/red] {response.status_code}: {response.text[:500]}")
        raise typer.Exit(1)
    return response


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _printable(value: object) -> str:
    """`value` on one line, its control and format characters (line breaks, terminal escapes,
    bidi overrides) escaped: alert labels must not forge output or drive the terminal.

    Print it with `markup=False` too, or a label such as `[/red]` is rich markup.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _who(record: dict[str, Any]) -> str:
    """Who did it: the name the credentials carry, and the one the caller gave if another
    (without credentials, on loopback, the given name is all there is)."""
    by, declared = record.get("by") or "-", record.get("declared_by")
    return f"{by}, says {declared}" if declared else by


def _operator() -> str:
    """Who runs this command: the login name ($LOGNAME, $USER, or the password database)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no name, as in some containers
        return f"uid {os.getuid()}"


def _describe(row: dict[str, Any]) -> str:
    """One decision as a short block: the alert, the rule and verdict, the flow run."""
    labels = row["labels"]
    # The last two: manual runs (who asked, by their credentials; who they said they were).
    keys = ("instance", "service", "severity", "flow", "requested_by", "declared_by")
    shown = ",".join(f"{k}={_printable(labels[k])}" for k in keys if k in labels)
    when = _utc(row["created_at"])
    alertname, reason = _printable(row["alertname"]), _printable(row["reason"])
    fingerprint = _printable((row.get("incident") or "").partition("@")[0]) or "-"
    lines = [
        f"#{row['id']}  {when}  {alertname}{{{shown}}} {row['alert_status']}  "
        f"fingerprint {fingerprint}",
        f"    {row['rule'] or '(no rule)'} → {row['verdict']}: {reason}",
    ]
    if row["flow_run_id"] or row["flow_run_state"]:
        state = row.get("run_status") or row["flow_run_state"] or "running"
        detail = f" ({_printable(row['detail'])})" if row.get("detail") else ""
        lines.append(
            f"    flow run {row['flow_run_id'] or '-'} {state}{detail}  {row['flow_run_url'] or ''}"
        )
    approval = row.get("approval") or {}
    if approval.get("by"):
        verdict = "approved" if approval.get("approved") else "rejected"
        comment = f": {_printable(approval['comment'])}" if approval.get("comment") else ""
        lines.append(
            f"    {verdict} by {_printable(approval['by'])} via {approval.get('via')}{comment}"
        )
    return "\n".join(lines)


catalog_app = typer.Typer(
    invoke_without_command=True, help="What Responder can do: operations and flows."
)
app.add_typer(catalog_app, name="catalog")


@catalog_app.callback()
def catalog_list(ctx: typer.Context) -> None:
    """List every atomic operation and flow (`responder catalog show NAME` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from flows.catalog import catalog

    table = Table("name", "kind", "risk", "tags", "description", box=None)
    for entry in catalog():
        table.add_row(entry.name, entry.kind, entry.risk, ",".join(entry.tags), entry.description)
    console.print(table)


@catalog_app.command("show")
def catalog_show(name: Annotated[str, typer.Argument(help="An operation or flow.")]) -> None:
    """Show one operation or flow: what it does, and each parameter."""
    from rich.table import Table

    from flows.catalog import find

    entry = find(name)
    if entry is None:
        err_console.print(f"[red]error:[/red] no operation or flow is named {name!r}")
        raise typer.Exit(1)
    console.print(f"[bold]{entry.name}[/bold]  {entry.kind}, risk {entry.risk}, {entry.source}")
    console.print(entry.description, highlight=False)
    schema = entry.parameters
    required = set(schema.get("required", []))
    table = Table("parameter", "type", "required", "default", "description", box=None)
    for field, spec in schema.get("properties", {}).items():
        kind = spec.get("type") or " | ".join(
            str(option.get("type", "?")) for option in spec.get("anyOf", [])
        )
        table.add_row(
            field,
            str(kind or spec.get("format", "")),
            "yes" if field in required else "",
            "" if "default" not in spec else json.dumps(spec["default"]),
            spec.get("description", ""),
        )
    console.print(table)


@app.command()
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
    parameters: dict[str, Any] = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep:
            err_console.print(f"[red]error:[/red] --param {item!r} is not NAME=VALUE")
            raise typer.Exit(2)
        try:
            parameters[name] = json.loads(value)
        except ValueError:
            parameters[name] = value
    body = {
        "parameters": parameters,
        "reason": reason or "started by hand",
        "requested_by": by or _operator(),
        "key": key,
        "mutex": mutex or [],
        "approval": approval,
    }
    response = _call(config, "POST", f"/api/v1/catalog/flows/{flow}/runs", ok=(202, 409), json=body)
    answer = response.json()
    if "decision" not in answer:
        console.print(f"accepted (inbox {answer['inbox_id']}); not decided yet")
        return
    console.print(_describe(answer["decision"]), highlight=False, markup=False, soft_wrap=True)
    if response.status_code == 409:
        raise typer.Exit(1)


@app.command()
def deploy(
    work_pool: Annotated[str, typer.Option(help="The Prefect work pool workers poll.")],
    work_queue: Annotated[str | None, typer.Option(help="A queue of that pool.")] = None,
    output: Annotated[Path, typer.Option(help="Where to write it.")] = Path("prefect.yaml"),
) -> None:
    """Write a prefect.yaml that deploys every flow to a work pool, for Prefect workers.

    Then run `prefect deploy --all` here, and `prefect worker start --pool POOL` on each
    worker machine (with this project installed).
    """
    import yaml

    from responder.orchestration.deployments import prefect_yaml

    document = prefect_yaml(work_pool, work_queue)
    output.write_text(yaml.safe_dump(document, sort_keys=False))
    console.print(
        f"wrote {output}: {len(document['deployments'])} deployments to work pool "
        f"{work_pool!r}.\nNext: prefect deploy --all --prefect-file {output}",
        highlight=False,
    )


@app.command("serve-flows", hidden=True)
def serve_flows_command(
    limit: Annotated[int, typer.Option(min=1, help="Flow runs executed at once.")] = 5,
) -> None:
    """Serve the remediation flows as Prefect deployments (started by `up`)."""
    from responder.orchestration.deployments import serve_flows

    serve_flows(limit=limit)


@app.command("demo-target")
def demo_target(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1).")] = 9480,
) -> None:
    """Run a stand-in service control API that the example rule restarts services through."""
    from responder.authoring.demo import DemoService

    target = DemoService(port=port)
    console.print(f"Demo service control API on {target.url} (GET /calls lists restarts)")
    try:
        target.serve_forever()
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Entry point of the `responder` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
