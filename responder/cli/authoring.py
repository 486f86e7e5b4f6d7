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
    at: Annotated[
        str | None,
        typer.Option(help="Judge the alerts as of this time (RFC 3339 or epoch; default now)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Show what the rules would do with a webhook, as of now (or --at); nothing is
    dispatched or stored."""
    from responder.authoring.simulation import simulate as run_simulation

    try:
        settings = settings_from(config)
        when = _moment("--at", at)
        lines = asyncio.run(run_simulation(settings, payload.read_bytes(), when))
    except ResponderError as exc:
        raise fail(exc) from None
    except OSError as exc:
        err_console.print(f"error: cannot read {payload}: {exc}")
        raise typer.Exit(1) from None
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True, markup=False)


def replay(
    rules: Annotated[Path, typer.Option("--rules", help="Today's rules (file or dir).")],
    proposed: Annotated[Path, typer.Option("--proposed", help="The proposed rules.")],
    from_inbox: Annotated[
        str | None, typer.Option("--from-inbox", help="A store URL: replay its inbox.")
    ] = None,
    prometheus: Annotated[
        str | None, typer.Option("--prometheus", help="A Prometheus URL: replay ALERTS.")
    ] = None,
    webhooks: Annotated[
        Path | None, typer.Option("--webhooks", help="A directory of webhook JSON bodies.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", "--start", help="RFC 3339 time or epoch seconds.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", "--end", help="RFC 3339 time or epoch seconds.")
    ] = None,
    step: Annotated[str, typer.Option(help="--prometheus: the query's resolution.")] = "15s",
    webhook_time: Annotated[
        str, typer.Option(help="--webhooks: a body's time, from its `alerts` or file `mtime`.")
    ] = "alerts",
    run_seconds: Annotated[str, typer.Option(help="How long each admitted run lasts.")] = "1m",
    run_state: Annotated[str, typer.Option(help="How each run ends.")] = "COMPLETED",
    page_rules: Annotated[str, typer.Option(help="Rules whose runs page (a glob).")] = "page-*",
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 if the difference has such a change: CHANGE-KIND[:FIELD=VALUE,...]"
            "[>N], e.g. new-remediation:tier=0, lost-remediation, budget (rules/README.md).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Replay a history of alerts through today's rules and proposed ones, and show the
    difference: remediations, refusals (budget, blast radius) and pages. Nothing is
    dispatched; each admitted run ends after --run-seconds on the replay's clock."""
    from responder.authoring.replay import parse_fail_on, report, table
    from responder.cli.display import printable

    try:
        settings = settings_from(config)
        lines = [parse_fail_on(spec) for spec in fail_on or []]
        history = _history(from_inbox, prometheus, webhooks, start, end, step, webhook_time)
        comparison = _compare(
            settings, history, rules, proposed, run_seconds, run_state, page_rules
        )
    except ResponderError as exc:
        raise fail(exc) from None
    document, crossed = report(comparison, history, lines)
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        for line in table(document):
            console.print(printable(line), highlight=False, soft_wrap=True, markup=False)
    if crossed:
        raise typer.Exit(1)


def _compare(
    settings: Any,
    history: Any,
    rules: Path,
    proposed: Path,
    run_seconds: str,
    run_state: str,
    page_rules: str,
) -> Any:
    """The history through both rule sets, compared."""
    from responder.authoring.replay import replay_both
    from responder.decision.rules import load_rules
    from responder.decision.services import load_services
    from responder.durations import parse_duration
    from responder.exceptions import PayloadError
    from responder.runtime.service import known_flows

    try:
        seconds = parse_duration(run_seconds)
    except ValueError as exc:
        raise PayloadError(f"--run-seconds: {exc}") from None
    flows = known_flows()
    return asyncio.run(
        replay_both(
            history,
            load_rules([rules], flows),
            load_rules([proposed], flows),
            load_services(settings.services_file),
            settings.rule_vars,
            run_seconds=seconds,
            run_state=_run_state(run_state),
            page_rules=page_rules,
        )
    )


def _run_state(state: str) -> str:
    from responder.exceptions import PayloadError

    if state not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        raise PayloadError(
            f"--run-state {state!r}: accepted: COMPLETED, FAILED, CRASHED, CANCELLED"
        )
    return state


def _history(
    from_inbox: str | None,
    prometheus: str | None,
    webhooks: Path | None,
    start: str | None,
    end: str | None,
    step: str,
    webhook_time: str,
) -> Any:
    """The history from the one source given, within --from and --to."""
    import time

    from responder.authoring import history
    from responder.durations import parse_duration
    from responder.exceptions import PayloadError

    given = [s for s in (from_inbox, prometheus, webhooks) if s is not None]
    if len(given) != 1:
        raise PayloadError("give one history: --from-inbox URL, --prometheus URL or --webhooks DIR")
    begin, until = _moment("--from", start), _moment("--to", end)
    if prometheus is not None:
        if begin is None:
            raise PayloadError("--prometheus needs --from (and --to, default now)")
        try:
            resolution = parse_duration(step)
        except ValueError as exc:
            raise PayloadError(f"--step: {exc}") from None
        return history.from_prometheus(prometheus, begin, until or time.time(), resolution)
    if from_inbox is not None:
        return asyncio.run(history.from_inbox(from_inbox, begin, until))
    if webhook_time not in ("alerts", "mtime"):
        raise PayloadError(f"--webhook-time {webhook_time!r}: accepted: alerts, mtime")
    assert webhooks is not None
    found = history.from_webhooks(webhooks, "mtime" if webhook_time == "mtime" else "alerts")
    kept = history.in_range(found.deliveries, begin, until)
    return history.History(kept.deliveries, found.skipped)


def _moment(flag: str, text: str | None) -> float | None:
    """Epoch seconds from an RFC 3339 time (UTC unless it says) or a number."""
    from datetime import UTC, datetime

    from responder.exceptions import PayloadError

    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(
            f"{flag} {text!r}: accepted: an RFC 3339 time (2026-12-01T10:00:00Z) or epoch seconds"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


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
