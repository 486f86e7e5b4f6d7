"""Hostile label and annotation values: nothing is executed or rendered as code.

Anyone who controls a scrape target controls label values, so `CORPUS` holds what such a
person would try: shell and template syntax, path traversal, option syntax, line breaks,
control and bidirectional characters, quotes, globs and a long value. Each test sends the
corpus down one real path:

- a webhook through intake, the engine loop, the guard and dispatch (a real Prefect server
  creates the flow run) to a YAML flow whose `command.run` step records its argv: every value
  arrives as one literal argument, byte for byte;
- the shipped rules, whose flows type their parameters: every value becomes an `error`
  decision naming the field, before the guard, and nothing runs;
- rule templates: a label renders as its text, and a sandbox escape written in a rule fails;
- URLs: a label in an HTTP path stays one segment on the wire; Kubernetes names refuse it;
- the HTTP edge: megabyte values, invalid UTF-8 and deep nesting get a 4xx JSON answer,
  never a 500, and the next valid webhook is still accepted;
- logs: a value with a line break never starts a line that looks like a log record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from uuid import UUID

import httpx
import pytest
import yaml
from pydantic import ValidationError

from flows import flow_names
from flows.operations import OPERATIONS, all_operations
from flows.operations.http import HttpRequest, http_request
from responder.authoring.sandbox import fingerprint_of
from responder.control.runs import active_runs
from responder.decision.decisions import template_context
from responder.decision.templates import path_segment, render, render_value
from responder.events.webhook import Alert
from responder.exceptions import TemplateError
from responder.runtime.service import Service
from tests.flows.operations.test_kubernetes import NODE, KubeReplay, write_kubeconfig
from tests.helpers import ROOT, app_client, fixture_json, make_settings, wait_for
from tests.intake.test_app import JSON, URL, decisions, settled
from tests.servers import QuietHandler, http_server

# Lines a value tries to slip into a log: the CLI's record format, then Prefect's.
FORGED = (
    "2026-11-26 14:00:00,000 ERROR responder.control.guard: forged record",
    "14:00:00.000 | ERROR   | prefect.flow_runs - forged record",
)

CORPUS = [
    # shell: none of these may run; each would create PWNED in the program's directory
    "; rm -rf /",
    "$(touch PWNED)",
    "`touch PWNED`",
    "| tee PWNED",
    "&& touch PWNED",
    "|| touch PWNED",
    "> PWNED",
    "x; touch PWNED #",
    "${HOME}",
    "$HOME",
    # templates and format strings: none may be evaluated
    "{{ 7*7 }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
    "{{ config }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__.os.popen('touch PWNED').read() }}",
    "{# comment #}{% raw %}",
    "%(message)s %s %d",
    "{0.__class__}",
    '{"__prefect_kind": "jinja", "template": "{{ 7*7 }}"}',
    # paths
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "..",
    ".",
    "/etc/passwd",
    "\\..\\..\\windows",
    "?admin=true#x",
    # line breaks and other control characters (NUL cannot cross exec(): see the edge test)
    "a\nb",
    "line1\r\nline2",
    f"\n{FORGED[0]}",
    f"\r\n{FORGED[1]}",
    "host-1\n",
    "\t\x07\x08\x0b\x0c\x7f",
    "\x1b[31mred\x1b[0m",
    # unicode
    "ünïcødé ✓ 日本語 🚀",
    "\u202eevil\u202c",
    "\u200bzero\u200dwidth\ufeff",
    # quotes and globs
    "it's",
    'say "hi"',
    "'\"\\",
    "*",
    "?[a-z]*",
    "~root",
    # options: argument injection where a value lands in front of a program's operands
    "-rf",
    "--option=value",
    "-oProxyCommand=touch PWNED",
    # empty, blank, long, and what other interpreters would take for code
    "",
    " ",
    "x" * 10_000,
    "<script>alert(1)</script>",
    "' OR '1'='1'; --",
]


def case_id(value: str) -> str:
    return ascii(value)[1:-1][:40] or "empty"


def probe_alert(
    labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """An alert as Alertmanager sends it, with these labels; it started an hour ago."""
    alert = dict(fixture_json("firing_single_servicedown")["alerts"][0])
    alert.update(
        labels=labels,
        annotations=annotations or {},
        fingerprint=fingerprint_of(labels),
        startsAt=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    )
    return alert


def webhook(alerts: list[dict[str, Any]]) -> bytes:
    body = fixture_json("firing_single_servicedown")
    body["alerts"] = alerts
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def responder(
    tmp_path: Path, rules: Path, *, prefect_api_url: str | None = None, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    """A running service on SQLite and a client of its HTTP app."""
    service = Service(make_settings(tmp_path, rules, **overrides), prefect_api_url=prefect_api_url)
    await service.start()
    client = app_client(service)
    try:
        yield client, service
    finally:
        await client.aclose()
        await service.stop()


def shipped_rules(tmp_path: Path, *names: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    for name in names:
        shutil.copy(ROOT / "rules" / name, directory)
    return directory


def forged_lines(records: list[logging.LogRecord]) -> list[str]:
    """Lines after the first of any record that begin like a record of their own."""
    return [
        line
        for record in records
        for line in re.split(r"\r\n|\r|\n", record.getMessage())[1:]
        if line.startswith(FORGED)
    ]


# --- labels reach a program as literal argv elements ------------------------------------

RECORD_FLOW = """\
flow: record-argv
description: >
  Test flow: hands free text from alert labels and annotations to a program, whose argv
  shows what arrived (`--` ends the options: a value starting with `-` is an operand), then
  runs a batch step that fails on one value, so that the failure is logged.
risk: high
parameters:
  recorder: {type: string}
  workdir: {type: string}
  labels: {type: list, items: string}
  annotations: {type: list, items: string}
  forge: {type: list, items: string}
steps:
  - name: record
    op: command.run
    with:
      argv: "{{ [params.recorder, '--'] + params.labels + params.annotations }}"
      cwd: "{{ params.workdir }}"
  - name: each
    batch:
      over: "{{ params.forge }}"
      as: value
      max_failures: 1
      steps:
        - {name: fail, op: command.run, with: {argv: ["false", "{{ value }}"]}}
"""

RECORDER = """\
import json, os, sys
with open("argv.json", "w") as out:
    json.dump([os.fsencode(arg).hex() for arg in sys.argv[1:]], out)
"""


def record_rule() -> str:
    labels = [f"{{{{ alert.labels.v{i} }}}}" for i in range(len(CORPUS))]
    annotations = [f"{{{{ alert.annotations.v{i} }}}}" for i in range(len(CORPUS))]
    rule = {
        "name": "record-hostile-values",
        "match": ['alertname="InjectionProbe"'],
        "run": {
            "flow": "record-argv",
            "parameters": {
                "recorder": "{{ vars.recorder }}",
                "workdir": "{{ vars.workdir }}",
                "labels": labels,
                "annotations": annotations,
                "forge": [f"{{{{ alert.labels.v{CORPUS.index(chr(10) + FORGED[0])} }}}}"],
            },
        },
        "guard": {"key": "record/{{ alert.fingerprint }}"},
    }
    return yaml.safe_dump({"rules": [rule]})


async def deploy_record_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Path, Path, Path]:
    """Deploy the `record-argv` test flow and its recording program: the flow, the
    recorder, the directory it works in, and an empty rules directory."""
    from prefect.types.entrypoint import EntrypointType

    import flows.parameters
    from flows.dsl import load_flow_file
    from flows.interpreter import build_flow

    # The test flow lives here, not in flows/: make it known to rules and to the parameter
    # check, and deploy it the way `responder up` deploys the shipped flows.
    (tmp_path / "record-argv.yaml").write_text(RECORD_FLOW)
    source = load_flow_file(tmp_path / "record-argv.yaml", set(all_operations()))
    record_argv = build_flow(source)
    shipped_model = flows.parameters.parameters_model
    monkeypatch.setattr(
        flows.parameters,
        "parameters_model",
        lambda name: source.spec.parameters_model if name == "record-argv" else shipped_model(name),
    )
    monkeypatch.setattr(
        "responder.runtime.service.known_flows", lambda: [*flow_names(), "record-argv"]
    )
    deployment = await record_argv.ato_deployment(
        name="record-argv", entrypoint_type=EntrypointType.MODULE_PATH
    )
    await deployment.aapply()

    recorder = tmp_path / "bin" / "record"
    recorder.parent.mkdir()
    recorder.write_text(f"#!{sys.executable}\n{RECORDER}")
    recorder.chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    rules = tmp_path / "rules"
    rules.mkdir()
    return record_argv, recorder, workdir, rules


@pytest.mark.prefect
async def test_every_value_reaches_a_program_as_one_literal_argument(
    prefect_api_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    record_argv, recorder, workdir, rules = await deploy_record_argv(tmp_path, monkeypatch)
    (rules / "record.yaml").write_text(record_rule())
    values = {f"v{i}": value for i, value in enumerate(CORPUS)}
    alert = probe_alert({"alertname": "InjectionProbe", **values}, annotations=values)

    caplog.set_level(logging.INFO)
    async with responder(
        tmp_path,
        rules,
        prefect_api_url=prefect_api_url,
        rule_vars={"recorder": str(recorder), "workdir": str(workdir)},
    ) as (client, _):
        response = await client.post(URL, content=webhook([alert]), headers=JSON)
        assert response.status_code == 200, response.text

        async def dispatched() -> dict[str, Any] | None:
            rows = await decisions(client)
            return rows[0] if rows and rows[0]["flow_run_id"] else None

        decision = await wait_for(dispatched, timeout=30)
        assert decision["verdict"] == "admitted", decision["reason"]
        async with get_client() as prefect:
            flow_run = await prefect.read_flow_run(UUID(decision["flow_run_id"]))
        # Prefect stored the parameters as sent: no value was hydrated or rendered.
        assert flow_run.parameters == decision["parameters"]
        assert flow_run.parameters["labels"] == CORPUS
        # What the served runner does in its subprocess, here in a thread: run this flow run.
        state = await asyncio.to_thread(
            functools.partial(run_flow, record_argv, flow_run, return_type="state")
        )
        assert state.is_completed(), state.message

        async def final() -> str | None:
            return (await decisions(client))[0]["flow_run_state"]  # type: ignore[no-any-return]

        assert await wait_for(final, timeout=30) == "COMPLETED"

    received = [bytes.fromhex(arg) for arg in json.loads((workdir / "argv.json").read_text())]
    assert received == [b"--", *(v.encode() for v in CORPUS), *(v.encode() for v in CORPUS)]
    assert [path.name for path in workdir.iterdir()] == ["argv.json"]  # no PWNED
    assert not Path("PWNED").exists()
    # The failing batch step logged the value that broke its line, without forging a record.
    assert any("fail failed on" in r.getMessage() for r in caplog.records)
    assert forged_lines(caplog.records) == []


# --- typed flow parameters refuse them before the guard ---------------------------------

# alertname: (rule file, flow, labels set to the value, the field the refusal names)
TYPED = {
    "ServiceDown": ("restart-service.yaml", "restart-service", ("instance", "service"), "host"),
    "DiskAlmostFull": ("disk.yaml", "clean-disk", ("instance", "mountpoint"), "host"),
    "TLSCertificateExpiringSoon": (
        "certificates.yaml",
        "renew-certificate",
        ("cert_host", "cert_name", "instance"),
        "host",
    ),
    "KubeNodeNotReady": ("nodes.yaml", "drain-node", ("node",), "node"),
}
# What `| segment` refuses outright: a URL parser would resolve it to another path.
NOT_A_SEGMENT = {"", ".", ".."}


async def test_typed_parameters_refuse_every_value_before_the_guard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = shipped_rules(tmp_path, *(spec[0] for spec in TYPED.values()))
    base = fixture_json("firing_single_servicedown")["alerts"][0]["labels"]
    alerts = [
        probe_alert({**base, "alertname": name, **dict.fromkeys(labels, value)})
        for name, (_, _, labels, _) in TYPED.items()
        for value in CORPUS
    ]
    caplog.set_level(logging.INFO)
    async with responder(tmp_path, rules) as (client, service):
        response = await client.post(URL, content=webhook(alerts), headers=JSON)
        assert response.status_code == 200, response.text
        await wait_for(lambda: settled(service), timeout=30)
        rows = await decisions(client)
        assert await active_runs(service.store) == []
        assert await service.store.leases.count() == 0

    assert len(rows) == len(alerts)
    for row in rows:
        _, flow, labels, field = TYPED[row["labels"]["alertname"]]
        value = row["labels"][labels[0]]
        if value == "":  # the shipped rules match only alerts with the labels they use
            assert row["verdict"] == "unmatched", row
            continue
        assert row["verdict"] == "error", (value, row)
        assert row["guard_key"] is None and row["flow_run_id"] is None
        if flow == "restart-service" and value in NOT_A_SEGMENT:
            assert "cannot be a URL path segment" in row["reason"]  # its URLs use `| segment`
        else:
            assert row["reason"].startswith(f"parameters do not fit flow {flow!r}: {field}: ")
        assert len(row["reason"]) < 1000  # the value is not echoed back
    assert not Path("PWNED").exists()
    assert forged_lines(caplog.records) == []


# --- templates --------------------------------------------------------------------------


@pytest.mark.parametrize("value", CORPUS, ids=case_id)
def test_a_label_renders_as_its_literal_text(value: str) -> None:
    alert = Alert.model_validate(probe_alert({"x": value}, {"x": value}))
    context = template_context(alert, {})
    assert render("{{ alert.labels.x }}", context) == value
    assert render("[{{ alert.annotations.x }}]", context) == f"[{value}]"
    # Rule parameters, and YAML flow steps, whose lone expressions keep their type.
    assert render_value({"a": ["{{ alert.labels.x }}"]}, context) == {"a": [value]}
    assert render_value("{{ alert.labels.x }}", context, native=True) == value
    assert render_value("{{ [alert.labels.x] }}", context, native=True) == [value]


@pytest.mark.parametrize("value", CORPUS, ids=case_id)
def test_segment_gives_one_path_segment_or_refuses(value: str) -> None:
    alert = Alert.model_validate(probe_alert({"x": value}))
    template = "{{ alert.labels.x | segment }}"
    if value in NOT_A_SEGMENT:
        with pytest.raises(TemplateError, match="cannot be a URL path segment"):
            render(template, template_context(alert, {}))
        return
    segment = render(template, template_context(alert, {}))
    assert "/" not in segment and "\\" not in segment and "?" not in segment
    assert unquote(segment) == value


# Sandbox escapes a rule author could write, and why each fails.
ESCAPES = [
    ("{{ ().__class__.__base__.__subclasses__() }}", "is unsafe"),
    ("{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}", "is unsafe"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "is unsafe"),
    ("{{ alert.__class__ }}", "is unsafe"),
    ("{{ alert | attr('__class__') }}", "is unsafe"),
    ("{{ self.__init__.__globals__ }}", "is unsafe"),
    ("{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}", "is unsafe"),
    ("{{ lipsum.__globals__['os'].popen('touch PWNED').read() }}", "is unsafe"),
    ("{{ joiner.__init__.__globals__ }}", "is unsafe"),
    ("{{ namespace.__init__.__globals__ }}", "is unsafe"),
    ("{{ '{0.__class__}'.format(alert) }}", "is unsafe"),
    ("{{ alert.labels.update({'x': 'y'}) }}", "is unsafe"),
    ("{{ alert.labels.pop('x') }}", "is unsafe"),
    ("{{ range(10 ** 9) | list | length }}", "Range too big"),
    ("{{ config }}", "'config' is undefined"),
    ("{{ request.application }}", "'request' is undefined"),
    ("{% include '/etc/passwd' %}", "no loader"),
    ("{% import 'os' as os %}{{ os.system('touch PWNED') }}", "no loader"),
]


@pytest.mark.parametrize(("template", "why"), ESCAPES)
def test_a_sandbox_escape_in_a_rule_template_fails(template: str, why: str) -> None:
    alert = Alert.model_validate(probe_alert({"x": "v"}))
    with pytest.raises(TemplateError, match=re.escape(why)):
        render(template, template_context(alert, {"v": "x"}))
    assert not Path("PWNED").exists()


async def test_a_rule_that_tries_an_escape_decides_error_and_runs_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    parameters = {"url": "http://127.0.0.1:9/", "json_body": {"x": ESCAPES[0][0]}}
    rule = {
        "name": "escape",
        "match": ['alertname="ServiceDown"'],
        "run": {"flow": "http-call", "parameters": parameters},
        "guard": {"key": "escape/{{ alert.fingerprint }}"},
    }
    (rules / "escape.yaml").write_text(yaml.safe_dump({"rules": [rule]}))
    async with responder(tmp_path, rules) as (client, service):
        alert = probe_alert(fixture_json("firing_single_servicedown")["alerts"][0]["labels"])
        await client.post(URL, content=webhook([alert]), headers=JSON)
        await wait_for(lambda: settled(service))
        [decision] = await decisions(client)
        assert await service.store.leases.count() == 0
    assert decision["verdict"] == "error"
    assert "unsafe" in decision["reason"]
    assert decision["guard_key"] is None


# --- URLs -------------------------------------------------------------------------------


class Recorder(QuietHandler):
    """Answers 200 to everything and keeps each request's method and raw target."""

    seen: list[tuple[str, str]]

    def do_GET(self) -> None:
        self.seen.append((self.command, self.path))
        self.reply(200, b"{}", "application/json")

    do_POST = do_GET


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Recording", (Recorder,), {"seen": seen})
    with http_server(handler) as url:
        yield url, seen


@pytest.mark.prefect
async def test_a_label_in_an_http_path_stays_one_segment_on_the_wire(
    prefect_api_url: str, tmp_path: Path, recorder: tuple[str, list[tuple[str, str]]]
) -> None:
    from flows.remediations import http_call

    base, seen = recorder
    rules = shipped_rules(tmp_path, "rollback.yaml")
    deploy = {
        "specversion": "1.0",
        "id": "d-1",
        "source": "ci",
        "type": "deploy.finished",
        "data": {"workload": "web", "previous_revision": "3"},
    }
    alerts = [
        probe_alert({"alertname": "KubePodCrashLooping", "namespace": v, "deployment": "web"})
        for v in CORPUS
    ]
    async with responder(tmp_path, rules, rule_vars={"deploy_api": f"{base}/deploys"}) as (
        client,
        service,
    ):
        events = {"content-type": "application/cloudevents+json"}
        assert (await client.post("/api/v1/events", json=deploy, headers=events)).is_success
        await wait_for(lambda: settled(service))
        assert (await client.post(URL, content=webhook(alerts), headers=JSON)).is_success
        await wait_for(lambda: settled(service), timeout=30)
        rows = {row["labels"]["namespace"]: row for row in await decisions(client)}

    assert sorted(rows) == sorted(CORPUS)
    expected: list[str] = []
    for value, row in rows.items():
        if value == "":  # the rule matches only alerts with the labels it uses
            assert row["verdict"] == "unmatched", row
            continue
        if value in NOT_A_SEGMENT:
            assert row["verdict"] == "error"
            assert "cannot be a URL path segment" in row["reason"]
            continue
        assert row["verdict"] == "admitted", row["reason"]
        expected.append(f"/deploys/rollback/{path_segment(value)}/web")
        # The operation's own code sends it: one request per value, no Prefect bookkeeping.
        http_request.fn(HttpRequest(method="POST", url=row["parameters"]["url"]))
    assert [path for _, path in seen] == expected
    for path in expected:
        _, deploys, rollback, namespace, web = path.split("/")
        assert (deploys, rollback, web) == ("deploys", "rollback", "web")
        assert unquote(namespace) in rows

    # And the whole flow once, as the runner would run the decision.
    seen.clear()
    traversal = rows["../../etc/passwd"]["parameters"]
    await asyncio.to_thread(functools.partial(http_call, **traversal))
    assert seen == [
        ("POST", "/deploys/rollback/..%2F..%2Fetc%2Fpasswd/web"),
        ("GET", "/deploys/health/..%2F..%2Fetc%2Fpasswd/web"),
    ]


def test_kubernetes_names_from_labels_are_refused_before_any_request(tmp_path: Path) -> None:
    replay = KubeReplay().start()
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kc", {"replay": replay.url}, current="replay")
        valid = {"name": "web", "namespace": "shop", "node": NODE, "replicas": 1}
        refused = 0
        for name, operation in OPERATIONS.items():
            fields = operation.parameters.model_fields
            if not name.startswith("kubernetes."):
                continue
            params = {k: v for k, v in valid.items() if k in fields}
            for field in ("name", "namespace", "node"):
                if field not in fields:
                    continue
                for value in CORPUS:
                    with pytest.raises(ValidationError, match=field):
                        operation({**params, field: value, "kubeconfig": kubeconfig})
                    refused += 1
        assert refused == 11 * len(CORPUS)  # 7 operations, 11 name fields
        assert replay.requests == []
    finally:
        replay.stop()


# --- the HTTP edge ----------------------------------------------------------------------


def with_label(value: str) -> bytes:
    return webhook([probe_alert({"alertname": "InjectionProbe", "x": value})])


def raw_label(raw: bytes) -> bytes:
    """A webhook whose label `x` holds these bytes verbatim inside its JSON string."""
    body = with_label("@@RAW@@")
    return body.replace(b"@@RAW@@", raw)


# (case, body, the answers it may get, the field a 422 names)
EDGE = [
    ("megabyte-label", with_label("x" * 1_000_000), {413, 422}, "alerts.0.labels.x"),
    ("over-the-body-limit", with_label("y" * 2_000_000), {413}, None),
    ("invalid-utf8", raw_label(b"\xff\xfe\xc3("), {400}, None),
    ("latin-1-body", raw_label("café".encode("latin-1")), {400}, None),
    ("lone-surrogate", raw_label(b"\\ud800"), {400}, None),
    ("utf-16-body", with_label("v").decode().encode("utf-16"), {400}, None),
    (
        "deep-nesting",
        raw_label(b'", "y": ' + b"[" * 100_000 + b"]" * 100_000 + b', "z": "'),
        {400},
        None,
    ),
    ("hostile-label-name", webhook([probe_alert({"x; rm -rf /": "v"})]), {422}, "alerts.0.labels"),
    ("label-not-a-string", raw_label(b'", "y": {"$(id)": 1}, "z": "'), {422}, "alerts.0.labels.y"),
]


async def test_the_edge_answers_4xx_json_and_loses_nothing(tmp_path: Path, rules_dir: Path) -> None:
    async with responder(tmp_path, rules_dir) as (client, service):
        for case, body, expected, field in EDGE:
            response = await client.post(URL, content=body, headers=JSON)
            assert response.status_code in expected, (case, response.status_code, response.text)
            assert response.headers["content-type"] == "application/json", case
            assert response.json()["error"], case
            if response.status_code == 422:
                assert field and any(
                    f["field"].startswith(field) for f in response.json()["fields"]
                )
            assert len(response.content) < 100_000, case  # the input is not echoed back
        assert await service.store.inbox.backlog() == 0  # nothing refused was committed

        # Valid, though unusual: a NUL and a lone combining mark are kept exactly.
        odd = "a\x00b\u0301"
        assert (await client.post(URL, content=with_label(odd), headers=JSON)).status_code == 200
        valid = fixture_json("firing_single_servicedown")
        assert (await client.post(URL, json=valid)).status_code == 200
        await wait_for(lambda: settled(service))
        rows = await decisions(client)
    assert [(r["labels"].get("x"), r["verdict"]) for r in rows] == [
        (odd, "unmatched"),
        (None, "admitted"),
    ]


# --- logs -------------------------------------------------------------------------------


async def test_a_line_break_in_a_label_forges_no_log_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every path that records a label without a flow run: refused, asserted, admitted."""
    forge = f"host-1\n{FORGED[0]}\r\n{FORGED[1]}"
    rules = shipped_rules(tmp_path, "restart-service.yaml", "outages.yaml", "escalation.yaml")
    base = fixture_json("firing_single_servicedown")["alerts"][0]["labels"]
    alerts = [
        probe_alert({**base, "instance": f"host-{i}", "service": forge}) for i in range(3)
    ] + [probe_alert({**base, "instance": forge})]
    caplog.set_level(logging.INFO)
    async with responder(tmp_path, rules, rule_vars={"pager_url": "http://127.0.0.1:9/page"}) as (
        client,
        service,
    ):
        await client.post(URL, content=webhook(alerts), headers=JSON)
        await client.post(URL, content=raw_label(forge.encode() + b"\xff"), headers=JSON)
        await wait_for(lambda: settled(service))
        verdicts = {row["verdict"] for row in await decisions(client)}
    assert verdicts >= {"error", "asserted", "admitted"}
    assert caplog.records, "the service logs something"
    assert forged_lines(caplog.records) == []


async def test_the_cli_shows_labels_as_escaped_plain_text(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`responder decisions`: rich markup in a label ([/red] ended the command with a
    MarkupError), terminal escapes and line breaks are shown, not obeyed."""
    from typer.testing import CliRunner

    from responder.cli import app as cli

    base = fixture_json("firing_single_servicedown")["alerts"][0]["labels"]
    instance = "[/red]host-1\n#999  2026-01-01 00:00:00  Forged{} firing"
    service = "[link=https://evil.example]checkout[/link]\x1b[2J\x1b]0;owned\x07\u202e"
    alert = probe_alert({**base, "instance": instance, "service": service})
    async with responder(tmp_path, rules_dir) as (client, service_):
        await client.post(URL, content=webhook([alert]), headers=JSON)
        await wait_for(lambda: settled(service_))
        response = await client.get("/api/v1/decisions")
    monkeypatch.setattr("responder.cli.client.call", lambda *args, **kwargs: response)
    result = CliRunner().invoke(cli, ["decisions"])
    assert result.exit_code == 0, result.output
    [header, verdict] = result.output.splitlines()
    fingerprint = response.json()["decisions"][0]["incident"].partition("@")[0]
    assert header.endswith(
        "ServiceDown{instance=[/red]host-1\\n#999  2026-01-01 00:00:00  Forged{} firing,"
        "service=[link=https://evil.example]checkout[/link]\\x1b[2J\\x1b]0;owned\\x07\\u202e,"
        f"severity=critical}} firing  fingerprint {fingerprint}"
    )
    assert verdict.startswith("    restart-crashed-service → error: parameters do not fit")
