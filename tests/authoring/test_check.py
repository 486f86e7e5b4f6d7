"""`responder check` compiles rules as the engine will run them: every template rendered
against what it will see, every parameter against its flow, every problem of every file in
one run, each at the line and column of the exact key or template."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from responder.cli import app
from tests.helpers import ROOT

# Each mistake of issue 18's "Why", and a few more, spread over three files.
PAGES = """\
rules:
  - name: page-on-call
    match: ['alertname="ServiceDown"', 'instance=~".+"']
    run:
      flow: http-call
      parameters:
        uri: "{{ vars.pager_url }}"
        method: FETCH
        verify_within_seconds: soon
        json_body:
          summary: "{{ alert.labels.instance }} down, see {{ vars.pagerurl }}"
          host: "{{ alert.label.instance }}"
    guard:
      key: "page/{{ alert.labels.instance }}"
"""

RESTART = """\
rules:
  - name: restart
    match: ['alertname="ServiceDown"', 'instance=~".+"', 'service="web"']
    run:
      flow: restart-service
      parameters:
        host: "{{ alert.labels.instance }}"
        service: "{{ alert.labels.service }}"
        restart_url: "{{ vars.service_control_url }}/restart/{{ alert.labels.zone }}"
    guard:
      key: "restart/{{ alert.labels.instance }}/{{ alert.labels.zone }}"
      mutex: ["host:{{ alert.host }}", "owner:{{ service.owner }}/{{ service.teir }}"]
  - name: note-outage
    match: ['alertname="NodeDown"']
    when: [{fact: deploy, where: ['team="a"']}]
    assert:
      fact: outage
      with:
        owner: "{{ service.owner }}"
        deploy: "{{ facts.deploy.version }} {{ facts.release.id }} {{ pagerurl }}"
  - name: after-outage
    match: ['alertname="Slow"']
    when: [{fact: outage}]
    assert: {fact: slow, with: {why: "{{ facts.outage.owner }} {{ facts.outage.zone }}"}}
"""

SYNTAX = """\
rules:
  - name: broken-template
    match: ['alertname="DiskFull"']
    run:
      flow: http-call
      parameters:
        url: "http://x/{{ alert.labels.instance"
    guard: {key: "k"}
  - name: typo
    mtach: ['alertname="X"']
    run: {flow: no-such-flow}
    guard: {key: "k/{{ alert.labels.instance }"}
  - name: unknown-flow
    match: ['alertname="X"']
    run: {flow: no-such-flow}
    guard: {key: "k"}
"""

HTTP_TAKES = (
    "url: AnyHttpUrl, method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' (optional), "
    "json_body: dict[str, Any] | None (optional), expected_status: list[int] | None "
    "(optional), verify_url: AnyHttpUrl | None (optional), verify_within_seconds: float "
    "(optional), verify_every_seconds: float (optional), headers_from_env: dict[str, str] | "
    "None (optional), approval_required: bool (optional), approval_timeout_seconds: int "
    "(optional)"
)
GUARANTEED_HINT = "an alert without it fails this template"

EXPECTED = [
    "pages.yaml:6:7: error: rule 'page-on-call': flow 'http-call' requires parameter 'url' "
    "(AnyHttpUrl)",
    "pages.yaml:7:9: error: rule 'page-on-call': flow 'http-call' takes no parameter 'uri' "
    f"(did you mean 'url'?); it takes: {HTTP_TAKES}",
    "pages.yaml:8:17: error: rule 'page-on-call': parameter method 'FETCH', which flow "
    "'http-call' refuses: Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE' "
    "(it takes 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE')",
    "pages.yaml:9:32: error: rule 'page-on-call': parameter verify_within_seconds 'soon', "
    "which flow 'http-call' refuses: Input should be a valid number, unable to parse string "
    "as a number (it takes float)",
    "pages.yaml:11:20: error: rule 'page-on-call': vars.pagerurl is not defined; rule_vars "
    "defines: pager_url, service_control_url",
    "pages.yaml:12:17: error: rule 'page-on-call': alert has no field 'label'; accepted: "
    "annotations, fingerprint, generatorURL, host, labels, startsAt, status",
    "restart.yaml:6:7: error: rule 'restart': flow 'restart-service' requires parameter "
    "'health_url' (AnyHttpUrl)",
    "restart.yaml:9:22: warning: rule 'restart': label 'zone' is not guaranteed by its match "
    f"(guaranteed: alertname, instance, service): {GUARANTEED_HINT} (and on line 11); match "
    "it ('zone!=\"\"') or give a default ({{ alert.labels.zone | default('') }})",
    "restart.yaml:12:40: error: rule 'restart': service has no field 'teir'; accepted: name, "
    "tier, owner, approval, hosts, batch, host_label",
    "restart.yaml:19:16: warning: rule 'note-outage': service.owner: the rule's matchers name "
    "no service of the catalog, and `service` is {} for an alert whose service is not in it "
    "(give a default: {{ service.owner | default('') }})",
    "restart.yaml:20:17: error: rule 'note-outage': 'pagerurl' is undefined; templates see: "
    "alert, facts, service, vars",
    "restart.yaml:20:17: error: rule 'note-outage': facts.release: the rule's `when` joins no "
    "fact 'release'; it joins: deploy",
    "restart.yaml:24:38: error: rule 'after-outage': fact 'outage' has no field 'zone'; its "
    "fields: deploy, owner",
    "syntax.yaml:7:14: error: rules.0.run.parameters.url: template "
    "'http://x/{{ alert.labels.instance': unexpected end of template, expected 'end of print "
    "statement'. (template line 1)",
    "syntax.yaml:10:5: error: rules.1.mtach: Extra inputs are not permitted; accepted keys: "
    "name, description, priority, shadow, status, match, event, schedule, not_followed_by, "
    "match_annotations, when, unless, count, after, firing_for, settle, assert, retract, run, "
    "guard",
    "syntax.yaml:12:18: error: rules.1.guard.key: template 'k/{{ alert.labels.instance }': "
    "unexpected '}' (template line 1)",
    "syntax.yaml:15:17: error: rule 'unknown-flow': unknown flow 'no-such-flow'; known flows: "
    "clean-disk, drain-node, http-call, renew-certificate, renew-certificates-in-batches, "
    "restart-in-batches, restart-service, rollback-deployment, smoke-check",
]


def config(tmp_path: Path) -> Path:
    """Settings with rule_vars and a catalog, as `responder check --config` reads them."""
    (tmp_path / "services.yaml").write_text("services:\n  web: {tier: 1, owner: team-web}\n")
    path = tmp_path / "responder.yaml"
    path.write_text(
        f"services_file: {tmp_path / 'services.yaml'}\n"
        "rule_vars:\n"
        "  pager_url: http://pager.example/page\n"
        "  service_control_url: http://ctl.example\n"
    )
    return path


def check(tmp_path: Path, files: dict[str, str], *flags: str) -> tuple[int, list[str]]:
    """Run `responder check` on these rule files; its exit code and its findings, each with
    the rule directory cut from its path."""
    rules = tmp_path / "rules"
    rules.mkdir(parents=True)
    for name, text in files.items():
        (rules / name).write_text(text)
    result = CliRunner().invoke(
        app, ["check", "--config", str(config(tmp_path)), *flags, str(rules)]
    )
    prefix = f"{rules}/"
    findings = [
        line.removeprefix(prefix) for line in result.output.splitlines() if line.startswith(prefix)
    ]
    return result.exit_code, findings


def test_every_mistake_of_every_file_in_one_run_at_its_line_and_column(tmp_path: Path) -> None:
    code, findings = check(
        tmp_path, {"pages.yaml": PAGES, "restart.yaml": RESTART, "syntax.yaml": SYNTAX}
    )
    assert code == 1
    assert findings == EXPECTED


def test_a_clean_rule_set_passes_even_with_strict(tmp_path: Path) -> None:
    clean = PAGES.replace('uri: "{{ vars.pager_url }}"', 'url: "{{ vars.pager_url }}"')
    clean = clean.replace("method: FETCH", "method: POST").replace("soon", "30")
    clean = clean.replace("vars.pagerurl", "vars.pager_url").replace(
        "alert.label.instance", "alert.host"
    )
    code, findings = check(tmp_path, {"pages.yaml": clean}, "--strict")
    assert (code, findings) == (0, [])


def test_a_label_the_matchers_do_not_guarantee_is_a_warning_and_strict_fails_it(
    tmp_path: Path,
) -> None:
    rule = RESTART.split("  - name: note-outage")[0]
    rule = rule.replace(', "owner:{{ service.owner }}/{{ service.teir }}"', "")
    rule = rule.replace(
        'restart_url: "{{ vars.service_control_url }}/restart/{{ alert.labels.zone }}"',
        'restart_url: "{{ vars.service_control_url }}/restart/{{ alert.labels.zone }}"\n'
        '        health_url: "{{ vars.service_control_url }}/health"',
    )
    code, findings = check(tmp_path, {"r.yaml": rule})
    assert code == 0
    assert [f.split(": warning: ")[0] for f in findings] == ["r.yaml:9:22"]
    assert "label 'zone' is not guaranteed" in findings[0]
    strict_code, again = check(tmp_path / "strict", {"r.yaml": rule}, "--strict")
    assert (strict_code, again) == (1, findings)


@pytest.mark.parametrize(
    ("template", "finding"),
    [
        ("{{ alert.labels.zone | default('none') }}", None),
        ("{% if alert.labels.zone is defined %}{{ alert.labels.zone }}{% endif %}", None),
        ("{{ alert.annotations.summary }}", "annotation 'summary' is not guaranteed"),
        ("{{ alert.labels.instance.__class__ }}", "is unsafe"),
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
    ],
)
def test_what_cannot_fail_is_not_reported_and_what_must_is(
    tmp_path: Path, template: str, finding: str | None
) -> None:
    rule = GOOD_ASSERT.replace("TEMPLATE", template)
    code, findings = check(tmp_path, {"r.yaml": rule})
    if finding is None:
        assert (code, findings) == (0, [])
    else:
        assert len(findings) == 1 and finding in findings[0], findings
        assert findings[0].startswith("r.yaml:6:20: ")


GOOD_ASSERT = """\
rules:
  - name: note
    match: ['alertname="X"', 'instance=~"db-.*"']
    assert:
      fact: seen
      with: {what: "TEMPLATE"}
"""


def test_the_shipped_rules_pass_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(
        app, ["check", "--strict", "--config", str(ROOT / "config" / "responder.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "0 error(s), 0 warning(s)" in result.output


def test_a_broken_flow_file_leaves_its_rules_parameters_unchecked_not_a_traceback(
    tmp_path: Path,
) -> None:
    from responder.authoring.check import check_rules
    from responder.decision.services import ServiceCatalog
    from responder.exceptions import FlowFileError

    def broken(flow: str) -> dict[str, tuple[bool, str]]:
        raise FlowFileError("not valid YAML", file="flows/broken.yaml", line=3)

    (tmp_path / "r.yaml").write_text(PAGES)
    report = check_rules(
        [tmp_path / "r.yaml"],
        ["http-call"],
        {"pager_url": "http://p"},
        ServiceCatalog(),
        fields_of=broken,
    )
    assert [(f.line, f.column) for f in report.errors] == [(11, 20), (12, 17)]  # templates only


def test_a_broken_catalog_is_one_more_error_and_the_rules_are_still_checked(
    tmp_path: Path,
) -> None:
    settings = config(tmp_path)
    (tmp_path / "services.yaml").write_text("services:\n  web: {tier: high}\n")
    (tmp_path / "r.yaml").write_text(PAGES)
    result = CliRunner().invoke(app, ["check", "--config", str(settings), str(tmp_path / "r.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'services.yaml'}:2:15: error: services.web.tier:" in result.output
    assert "7 error(s)" in result.output  # the catalog's, and the 6 of PAGES


EVENT_RULES = """\
rules:
  - name: smoke
    event: ['type="deploy.finished"', 'data.env="prod"']
    run: {flow: http-call, parameters: {url: "http://x/{{ event.data.workload }}/{{ SUBJECT }}"}}
    guard: {key: "smoke/{{ event.subject }}/{{ event.data.env }}"}
  - name: nightly
    schedule: {cron: "0 2 * * *", timezone: TZ}
    assert: {fact: ticked, with: {at: "{{ event.time }}"}}
  - name: never-finished
    event: ['type="deploy.started"']
    not_followed_by: {match: ['type="deploy.finished"'], within: 30m, same: [subject]}
    unless: [{fact: freeze, where: ['workload="{{ event.subject }}"']}]
    assert: {fact: stuck, with: {workload: "{{ event.subject }}"}}
"""


def test_event_rules_compile_against_a_sample_event(tmp_path: Path) -> None:
    clean = EVENT_RULES.replace("SUBJECT", "event.subject").replace("TZ", "Europe/Paris")
    assert check(tmp_path / "clean", {"r.yaml": clean}, "--strict") == (0, [])
    broken = EVENT_RULES.replace("SUBJECT", "event.subjct").replace("TZ", "Paris")
    code, findings = check(tmp_path / "broken", {"r.yaml": broken})
    assert code == 1
    assert findings == [
        "r.yaml:4:46: error: rule 'smoke': event has no field 'subjct'; accepted: data, id, "
        "source, subject, time, type",
        "r.yaml:7:45: error: rules.1.schedule.timezone: timezone 'Paris' is not an IANA time "
        "zone name (e.g. UTC, Europe/Paris)",
    ]
