"""Server commands: `up` (Responder with a local Prefect server and flow runner) and
`serve` (one replica, with Prefect run elsewhere)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Annotated, Any

import typer

from responder import tls
from responder.cli.common import ConfigOption, console, err_console, fail, settings_from
from responder.exceptions import ResponderError

HostOption = Annotated[str | None, typer.Option(help="Bind address of the webhook receiver.")]
PortOption = Annotated[int | None, typer.Option(help="Port of the webhook receiver.")]


def http_server(settings: Any, service: Any) -> Any:
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


def up(config: ConfigOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Start a local Prefect server, serve the flows and receive Alertmanager webhooks."""
    from responder.authoring.check import refuse_errors
    from responder.runtime.service import Service
    from responder.runtime.supervisor import Supervisor, worker_environment

    _log_to_stderr()
    try:
        settings = settings_from(config, host=host, port=port)
        external = settings.prefect_api_url or os.environ.get("PREFECT_API_URL")
        supervisor = Supervisor(
            settings.data_dir,
            settings.prefect_port,
            external,
            settings.runner_limit,
            worker_env=worker_environment(settings),
        )
        # Prefect's own code in this process (its event worker) finds its server here;
        # without it, Prefect starts an ephemeral server, blocking the event loop meanwhile.
        os.environ["PREFECT_API_URL"] = supervisor.api_url
        service = Service(settings, prefect_api_url=supervisor.api_url, check=refuse_errors)
    except ResponderError as exc:
        raise fail(exc) from None
    console.print("Starting Prefect…" if not external else f"Using Prefect at {external}")
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM handler that would kill this process before it stops its children (systemd
    # and `kill` send SIGTERM). Make it an exit that runs the `finally` below.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        supervisor.start()
        server = http_server(settings, service)
        asyncio.run(
            _serve_until_a_child_dies(server, supervisor, lambda: print_banner(settings, service))
        )
    except ResponderError as exc:
        raise fail(exc) from None
    finally:
        console.print("Stopping…")
        supervisor.stop()


def serve(config: ConfigOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Run one Responder replica: the webhook receiver and, while it leads, the engine.

    For several replicas on one PostgreSQL database (`database_url`), with Prefect and its
    workers run separately (`prefect_api_url` or PREFECT_API_URL; `responder deploy`).
    `responder up` is this plus a local Prefect server and flow runner.
    """
    from responder.authoring.check import refuse_errors
    from responder.runtime.service import Service

    _log_to_stderr()
    try:
        settings = settings_from(config, host=host, port=port)
        api_url = settings.prefect_api_url or os.environ.get("PREFECT_API_URL")
        service = Service(settings, prefect_api_url=api_url, check=refuse_errors)
    except ResponderError as exc:
        raise fail(exc) from None
    http_server(settings, service).run()


def serve_flows_command(
    limit: Annotated[
        int | None, typer.Option(min=1, help="Flow runs executed at once (default: 10 per CPU).")
    ] = None,
) -> None:
    """Serve the remediation flows as Prefect deployments (started by `up`)."""
    from responder.orchestration.deployments import serve_flows
    from responder.settings import Settings

    default = Settings.model_fields["runner_limit"].get_default(call_default_factory=True)
    serve_flows(limit=limit or default)


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
    import httpx

    transport = httpx.ASGITransport(app=server.config.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://responder") as client:
        return (await client.get("/readyz")).status_code == 200


def _alertmanager_http_config(settings: Any) -> list[str]:
    """The lines under `http_config:` for Alertmanager to reach this Responder, two spaces
    per level."""
    http_config: list[str] = []
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
    return http_config


def print_banner(settings: Any, service: Any) -> None:
    """Where Responder listens, and the receiver to paste into alertmanager.yml."""
    auth = "".join(f"\n          {line}" for line in _alertmanager_http_config(settings))
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
