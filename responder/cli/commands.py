"""The `responder` Typer app: every command, registered here in the order `--help` lists
them, from the modules of their audience (`server`, `operator`, `authoring`)."""

from __future__ import annotations

import sys

import typer

from responder.cli import authoring, operator, server
from responder.cli.maintenance import maintenance_app

HELP = "The `responder` command: thin; flags become settings, settings become a service."

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)

app.command()(server.up)
app.command()(server.serve)
app.command()(authoring.check)
app.command()(authoring.schema)
app.command()(authoring.reference)
app.command("test")(authoring.test_rules)
app.command()(operator.decisions)
app.command()(operator.explain)
app.command()(authoring.simulate)
app.command()(authoring.replay)
app.command()(operator.pause)
app.command()(operator.resume)
app.command()(operator.status)
app.command()(operator.approvals)
app.command()(operator.approve)
app.command()(operator.reject)
app.add_typer(authoring.catalog_app, name="catalog")
app.add_typer(maintenance_app, name="maintenance")
app.command()(operator.run)
app.command()(authoring.deploy)
app.command("serve-flows", hidden=True)(server.serve_flows_command)
app.command("demo-target")(authoring.demo_target)


def main() -> None:
    """Entry point of the `responder` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
