"""Authoring commands: for whoever writes rules and flows, offline (check, schema, test,
simulate, reference, catalog, deploy, demo-target)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from responder.cli.common import ConfigOption, console, err_console, fail, settings_from
from responder.exceptions import ResponderError


def check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Rule files or directories.")] = None,
    config: ConfigOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Warnings are errors too (for CI).")
    ] = False,
) -> None:
    """Compile rule files and YAML flows: every error and warning of every file, each at its
    file, line and column; exit 1 on an error (or, with --strict, a warning)."""
    from responder.authoring.check import check_setup

    try:
        settings = settings_from(config)
    except ResponderError as exc:
        raise fail(exc) from None
    report, flows, findings = check_setup(settings, paths)
    for name, flow_source in flows.items():
        console.print(f"ok  flow {name:<27} {flow_source.file}", highlight=False, soft_wrap=True)
    for rule, source in zip(report.book.rules, report.book.sources, strict=True):
        if not any(
            f.file == source.file and f.message.startswith(f"rule {rule.name!r}") for f in findings
        ):
            console.print(
                f"ok  {rule.name:<32} {source.file}:{source.line}  → {_does(rule)}",
                highlight=False,
                soft_wrap=True,
            )
    for found in findings:
        (err_console if found.severity == "error" else console).print(
            str(found), highlight=False, soft_wrap=True, markup=False
        )
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    console.print(
        f"{len(report.book.rules)} rules and {len(flows)} YAML flows: {errors} error(s), "
        f"{warnings} warning(s)" + (" (--strict: warnings fail)" if strict else "")
    )
    if errors or (strict and warnings):
        raise typer.Exit(1)


def _does(rule: Any) -> str:
    parts = [f"run {rule.run.flow}"] if rule.run else []
    if rule.assert_:
        parts.append(f"assert {rule.assert_.fact}")
    parts.extend(f"retract {c.fact}" for c in rule.retract)
    return ", ".join(parts)


def schema() -> None:
    """Print the JSON Schema of rule files, for editors (rules/rules.schema.json)."""
    from responder.decision.rules import rule_file_schema

    print(json.dumps(rule_file_schema(), indent=2, sort_keys=True))


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


def test_rules(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Test files or directories (default rules/tests).")
    ] = None,
) -> None:
    """Run rule test files: alerts and events over time in, expected decisions and facts out.

    A directory's `*.yaml` files are tests; fixtures (catalogs, facts) go in a subdirectory
    (rules/tests/fixtures/). A file that cannot be run is an error; the others still run.
    """
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
            failed += 1
            err_console.print(f"ERROR {exc}", highlight=False, soft_wrap=True, markup=False)
            continue
        for outcome in outcomes:
            if outcome.passed:
                console.print(f"ok    {file}: {outcome.name}", highlight=False, soft_wrap=True)
            else:
                failed += 1
                console.print(f"FAIL  {file}: {outcome.name}", highlight=False, soft_wrap=True)
                console.print(outcome.diff, highlight=False, markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def simulate(
    payload: Annotated[Path, typer.Argument(help="An Alertmanager webhook body (JSON).")],
    config: ConfigOption = None,
) -> None:
    """Show what the rules would do with a webhook; nothing is dispatched or stored."""
    from responder.authoring.simulation import simulate as run_simulation

    try:
        settings = settings_from(config)
        lines = asyncio.run(run_simulation(settings, payload.read_bytes()))
    except ResponderError as exc:
        raise fail(exc) from None
    except OSError as exc:
        err_console.print(f"error: cannot read {payload}: {exc}")
        raise typer.Exit(1) from None
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True, markup=False)


catalog_app = typer.Typer(
    invoke_without_command=True, help="What Responder can do: operations and flows."
)


@catalog_app.callback()
def catalog_list(ctx: typer.Context, config: ConfigOption = None) -> None:
    """List every atomic operation and flow (`responder catalog show NAME` for one), those
    of the `flows_dir` directories too; a flow file that cannot be read is an error."""
    _use_flow_dirs(config)
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from flows.catalog import catalog

    table = Table("name", "kind", "risk", "tags", "description", box=None)
    for entry in _readable(catalog):
        table.add_row(entry.name, entry.kind, entry.risk, ",".join(entry.tags), entry.description)
    console.print(table)


def _use_flow_dirs(config: Path | None) -> None:
    from responder.orchestration.flow_catalog import use_flow_dirs

    try:
        use_flow_dirs(settings_from(config).flows_dir)
    except ResponderError as exc:
        raise fail(exc) from None


def _readable(read: Callable[[], Any]) -> Any:
    """What `read` reads of the flows; a flow file that cannot be read is an error at its
    file and line (exit 1), never a traceback."""
    from responder.exceptions import DocumentError

    try:
        return read()
    except DocumentError as exc:
        err_console.print(
            f"{exc.file or '<input>'}:{exc.line or 1}:{exc.column or 1}: error: {exc.problem}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(1) from None


@catalog_app.command("show")
def catalog_show(name: Annotated[str, typer.Argument(help="An operation or flow.")]) -> None:
    """Show one operation or flow: what it does, and each parameter."""
    from rich.table import Table

    from flows.catalog import find

    entry = _readable(lambda: find(name))
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


def deploy(
    work_pool: Annotated[str, typer.Option(help="The Prefect work pool workers poll.")],
    work_queue: Annotated[str | None, typer.Option(help="A queue of that pool.")] = None,
    output: Annotated[Path, typer.Option(help="Where to write it.")] = Path("prefect.yaml"),
    config: ConfigOption = None,
) -> None:
    """Write a prefect.yaml that deploys every flow to a work pool, for Prefect workers.

    Then run `prefect deploy --all` here, and `prefect worker start --pool POOL` on each
    worker machine (with this project installed, and the `flows_dir` directories at the
    same paths, in RESPONDER_FLOWS_PATH).
    """
    import yaml

    from responder.orchestration.deployments import prefect_yaml

    _use_flow_dirs(config)
    document = _readable(lambda: prefect_yaml(work_pool, work_queue))
    output.write_text(yaml.safe_dump(document, sort_keys=False))
    console.print(
        f"wrote {output}: {len(document['deployments'])} deployments to work pool "
        f"{work_pool!r}.\nNext: prefect deploy --all --prefect-file {output}",
        highlight=False,
    )


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
