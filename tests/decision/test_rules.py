from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from responder.cli import app
from responder.decision.rules import load_rule_text, load_rules
from responder.exceptions import RuleError
from tests.helpers import ROOT

FLOWS = ["restart-service", "http-call"]

GOOD = """\
rules:
  - name: first
    match: ['alertname="A"']
    run: {flow: restart-service, parameters: {host: "{{ alert.labels.instance }}"}}
    guard: {key: "k/{{ alert.labels.instance }}"}
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        load_rules([write(tmp_path, text)], FLOWS)
    return info.value


def test_shipped_rules_are_valid() -> None:
    from flows import flow_names

    book = load_rules([ROOT / "rules"], flow_names())
    assert "restart-crashed-service" in [r.name for r in book.rules]
    assert len(book.rules) >= 7


def test_good_file_loads_with_source_lines(tmp_path: Path) -> None:
    book = load_rules([write(tmp_path, GOOD)], FLOWS)
    assert book.sources[0].line == 2
    assert book.rules[0].matchers[0].value == "A"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (
            GOOD.replace("match:", "matches:"),
            3,
            "accepted keys: name, description, priority, shadow, status, match,",
        ),
        (GOOD.replace("'alertname=\"A\"'", "'alertname==\"A\"'"), 3, 'quote it: name="value"'),
        (GOOD.replace("'alertname=\"A\"'", "'alertname<>\"A\"'"), 3, "accepted operators"),
        (
            GOOD.replace("k/{{ alert.labels.instance }}", "k/{{ alert.labels.instance"),
            5,
            "unexpected end",
        ),
        (GOOD.replace("name: first", "name: First Rule"), 2, "should match pattern"),
        (
            GOOD.replace("name: first", "name: first\n    priority: high"),
            3,
            "rules.0.priority: Input should be a valid integer, unable to parse string as an "
            "integer (given: 'high')",
        ),
        (GOOD.replace("flow: restart-service", "flow: nope"), 4, "unknown flow 'nope'"),
        (
            GOOD + "  - name: second\n    match: []\n    assert: {fact: f}\n",
            6,
            "alerts (`match`), events (`event`) or a schedule (`schedule`); give exactly one",
        ),
        (GOOD.replace("    match:", "    name: again\n    match:"), 3, "appears twice"),
        ("rules:\n  - name: [unclosed\n", 3, "not valid YAML"),
        (
            GOOD.replace('}}"}}\n', '}}"}, batch: {window: 30s, over: host}}\n', 1),
            4,
            "batch.over names parameter 'host', which must be a list",
        ),
    ],
)
def test_errors_name_file_line_and_what_is_accepted(
    tmp_path: Path, text: str, line: int, needle: str
) -> None:
    error = error_for(tmp_path, text)
    assert error.file == str(tmp_path / "r.yaml")
    assert error.line == line, str(error)
    assert needle in str(error)


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("rules: \x00", 1, "character #x0000 is not allowed"),
        ("rules:\n  - name: r\n    priority: 2001-02-30\n", 3, "day is out of range"),
        ("rules: !!timestamp x", 1, "cannot read this value"),
        ("rules: " + "1" * 5000, 1, "cannot read this value"),
        ("[" * 2000, 1, "nested too deeply"),
        ("rules:\n  - &a [*a]\n", 2, "contains an alias to itself"),
        ("? [a]\n: 1\n", 1, "unhashable key"),
        (GOOD + "    firing_for: " + "9" * 400 + "d\n", 6, "finite"),
        (GOOD.replace("k/{{", "{% for x in y %}" * 25 + "{% endfor %}" * 25 + "k/{{"), 5, "nested"),
    ],
)
def test_unreadable_yaml_is_a_rule_error_with_its_line(text: str, line: int, needle: str) -> None:
    # Found by tests/test_fuzz.py: each of these raised something other than RuleError.
    with pytest.raises(RuleError) as info:
        load_rule_text(text, "r.yaml")
    assert (info.value.file, info.value.line) == ("r.yaml", line), str(info.value)
    assert needle in str(info.value)


def test_duplicate_rule_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(RuleError, match=r"already used at .*a\.yaml:2") as info:
        load_rules([tmp_path], FLOWS)
    assert info.value.file is not None and info.value.file.endswith("b.yaml")


def test_check_command_reports_file_and_line(tmp_path: Path) -> None:
    # The whole compiler is tested in tests/authoring/test_check.py.
    good = GOOD.replace(
        'run: {flow: restart-service, parameters: {host: "{{ alert.labels.instance }}"}}',
        'run: {flow: http-call, parameters: {url: "http://x/{{ alert.host }}"}}',
    )
    runner = CliRunner()
    ok = runner.invoke(app, ["check", str(write(tmp_path, good))])
    assert ok.exit_code == 0, ok.output
    assert "1 rules and" in ok.output
    bad = write(tmp_path, good.replace("guard:", "gaurd:"), "bad.yaml")
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:5:5: error: rules.0.gaurd: Extra inputs" in result.output.replace("\n", "")


def test_guard_policy_fields_and_durations(tmp_path: Path) -> None:
    text = GOOD.replace(
        '    guard: {key: "k/{{ alert.labels.instance }}"}',
        "    guard:\n"
        '      key: "k/{{ alert.labels.instance }}"\n'
        '      mutex: ["host:{{ alert.labels.instance }}"]\n'
        "      cooldown: 1h30m\n"
        "      cooldown_failed: 90\n"
        "      budget: {max_starts: 5, per: 10m, scope: global}\n",
    )
    [rule] = load_rules([write(tmp_path, text)], FLOWS).rules
    assert rule.guard.cooldown == 5400.0
    assert rule.guard.cooldown_failed == 90.0
    assert rule.guard.budget is not None and rule.guard.budget.per == 600.0
    bad = error_for(tmp_path, text.replace("cooldown: 1h30m", "cooldown: soon"))
    assert bad.line == 8
    assert "'soon' is not a duration" in str(bad)


def test_the_committed_json_schema_is_current() -> None:
    import json

    from responder.decision.rules import rule_file_schema

    committed = json.loads((ROOT / "rules" / "rules.schema.json").read_text())
    assert committed == rule_file_schema(), "run: responder schema > rules/rules.schema.json"
    rule = committed["$defs"]["Rule"]
    assert rule["additionalProperties"] is False
    assert "assert" in rule["properties"]


def test_shipped_rules_validate_against_the_json_schema() -> None:
    import json

    import jsonschema
    import yaml

    schema = json.loads((ROOT / "rules" / "rules.schema.json").read_text())
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rules": [{"name": "x", "mtach": []}]}, schema)


def test_secret_header_names_cannot_be_templates(tmp_path: Path) -> None:
    text = GOOD.replace(
        'parameters: {host: "{{ alert.labels.instance }}"}',
        'parameters: {headers_from_env: {Authorization: "{{ alert.labels.x }}"}}',
    )
    error = error_for(tmp_path, text)
    assert "constants, never templates" in str(error)
    assert error.line == 4


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Each level lists the one before `width` times: width**levels values once expanded."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\nrules: []\n"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (alias_bomb(), 7, "expand the document beyond 1000000 values"),
        ("x: &x a\nrules: [" + ", ".join(["*x"] * 10_001) + "]\n", 2, "more than 10000 aliases"),
    ],
)
def test_an_alias_bomb_is_refused_at_once_by_check(
    tmp_path: Path, text: str, line: int, needle: str
) -> None:
    # A real `responder check` process, so that an exponential walk fails by its timeout.
    path = write(tmp_path, text, "bomb.yaml")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "responder", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    output = (result.stdout + result.stderr).replace("\n", "")
    assert f"{path}:{line}" in output
    assert needle in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 20
