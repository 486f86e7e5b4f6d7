"""Fuzzing: hostile input must end in the documented error, never in a crash or a 500.

Hypothesis drives the parsers (the webhook model, matchers, rule files, YAML flows,
CloudEvents) with arbitrary input and with input shaped like the real thing. Schemathesis
drives every operation of the HTTP API's OpenAPI document, and Hypothesis posts arbitrary
bodies to the two intake endpoints, against a real uvicorn server on 127.0.0.1.

Runs are reproducible: every test is derandomized and keeps no example database. The
example counts are the constants below.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import APIOperation, Case, GenerationMode

from flows.dsl import load_flow_file
from responder.decision.engine import Engine
from responder.decision.matchers import MatchOp, parse_matcher
from responder.decision.rules import RuleBook, load_rule_text
from responder.events.cloudevents import MAX_VALUE, parse_events
from responder.events.webhook import AlertmanagerWebhook
from responder.exceptions import DocumentError, FlowFileError, MatcherError, RuleError
from responder.intake.app import create_app
from responder.runtime.service import Service
from tests.helpers import FIXTURES, ROOT, all_fixture_names, fixture_json, free_port, make_settings

# Examples per test (per API operation for schemathesis). The 2-core CI machine runs the
# whole file in about a minute; raise these locally for a longer hunt.
WEBHOOK_BYTES_EXAMPLES = 300
WEBHOOK_SHAPED_EXAMPLES = 500
MATCHER_TEXT_EXAMPLES = 500
MATCHER_SHAPED_EXAMPLES = 500
MATCHER_REGEX_EXAMPLES = 300
RULE_TEXT_EXAMPLES = 400
RULE_SHAPED_EXAMPLES = 400
FLOW_TEXT_EXAMPLES = 200
FLOW_SHAPED_EXAMPLES = 400
EVENT_EXAMPLES = 400
INTAKE_EXAMPLES = 300
RUN_EXAMPLES = 60
API_EXAMPLES = 50


# Hypothesis warns when the global `random` state changes while it draws an example. In a
# full test session, threads left by earlier tests (Prefect's clients and services, which
# jitter their retries with `random`) do that; our strategies never use `random`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


def fuzz(examples: int) -> settings:
    """Hypothesis settings for one fuzz test: a fixed count, no deadline, no randomness."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- JSON-like values and the real payloads' shape -------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True) | st.text(max_size=8)
label_sets = st.dictionaries(label_names, st.text(max_size=30), max_size=6)
valid_label_sets = st.dictionaries(
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True), st.text(max_size=30), max_size=6
)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
aware_timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC) | offsets).map(datetime.isoformat),
    st.sampled_from(
        ["2026-11-25T23:17:23.549Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999-23:59"]
    ),
)
timestamps = st.one_of(
    aware_timestamps,
    st.datetimes().map(datetime.isoformat),
    st.sampled_from(["0001-01-01T00:00:00", "2026-11-25", "2026-11-25T25:00:00Z", "1e20"]),
    json_values,
)


def often(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three times in four the usual value, else the other."""
    # Not one_of(usual, usual, usual, other): Hypothesis would draw each branch as often.
    return st.sampled_from([True, True, True, False]).flatmap(lambda u: usual if u else other)


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed value, sometimes anything at all."""
    return often(good, json_values)


alerts = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": valid_label_sets,
        "startsAt": aware_timestamps,
        "fingerprint": st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True),
    },
    optional={
        "annotations": valid_label_sets,
        "endsAt": aware_timestamps,
        "generatorURL": st.text(max_size=20),
    },
)
webhooks = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "groupKey": st.text(max_size=20),
        "status": st.sampled_from(["firing", "resolved"]),
        "receiver": st.text(max_size=10),
        "alerts": st.lists(alerts, min_size=1, max_size=4),
    },
    optional={
        "truncatedAlerts": st.integers(min_value=0),
        "groupLabels": valid_label_sets,
        "commonLabels": valid_label_sets,
        "commonAnnotations": valid_label_sets,
        "externalURL": st.text(max_size=20),
    },
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


@st.composite
def mutated(
    draw: st.DrawFn, documents: st.SearchStrategy[Any], replacements: st.SearchStrategy[Any]
) -> Any:
    """A document with up to three of its values replaced by `replacements`, or dropped."""
    document = copy.deepcopy(draw(documents))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            return draw(replacements)
        parent = _at(document, path[:-1])
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(replacements)
    return document


FIXTURE_PAYLOADS = [fixture_json(name) for name in all_fixture_names()]
payloads = mutated(
    webhooks | st.sampled_from(FIXTURE_PAYLOADS), json_values | timestamps | label_sets
)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- the webhook model -------------------------------------------------------------------


def check_webhook(body: bytes) -> None:
    try:
        webhook = AlertmanagerWebhook.model_validate_json(body)
    except ValidationError:
        event("refused")
        return
    event("accepted")
    assert 1 <= len(webhook.alerts) <= 10_000
    for alert in webhook.alerts:
        assert isinstance(alert.incident, str)
        assert alert.incident.startswith(f"{alert.fingerprint}@")
        assert isinstance(alert.alertname, str)
        # The engine orders and times alerts by their start: it must be a point in time.
        assert alert.starts_at.tzinfo is not None
        alert.starts_at.timestamp()
    # The engine stores resolved alerts as JSON and reads them back.
    again = AlertmanagerWebhook.model_validate_json(webhook.model_dump_json(by_alias=True))
    assert again == webhook


@fuzz(WEBHOOK_BYTES_EXAMPLES)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff\xfe")
@example(FIXTURES.joinpath("firing_single_servicedown.json").read_bytes())
def test_webhook_model_takes_any_bytes(body: bytes) -> None:
    check_webhook(body)


@fuzz(WEBHOOK_SHAPED_EXAMPLES)
@given(payloads)
def test_webhook_model_takes_any_payload_shaped_like_alertmanagers(payload: Any) -> None:
    check_webhook(dumps(payload))


# --- matchers ----------------------------------------------------------------------------

OPERATORS = ["=", "!=", "=~", "!~"]
regex_text = st.text(alphabet="ab.*+?|()[]{}\\^$-,0123456789:<>=!P", max_size=16)
# What a regex can ask of the re module beyond its grammar: large counts, deep nesting.
regex_limits = st.one_of(
    st.integers(0, 2**40).map(lambda n: f"a{{{n}}}"),
    st.integers(0, 2**40).map(lambda n: f"a{{1,{n}}}"),
    st.integers(1, 1500).map(lambda depth: "(" * depth + "a" + ")" * depth),
)
matcher_values = st.one_of(
    st.text(max_size=20).map(json.dumps),
    st.text(max_size=20),
    regex_text.map(json.dumps),
    regex_text,
    regex_limits.map(json.dumps),
)


@st.composite
def matcher_texts(draw: st.DrawFn) -> str:
    """Text shaped like a matcher: a name, an operator and a value, with odd spacing."""
    space = st.sampled_from(["", " ", "\t", "\n"])
    name = draw(label_names)
    op = draw(st.sampled_from([*OPERATORS, "==", "~", "=!", ""]))
    return draw(space) + name + draw(space) + op + draw(space) + draw(matcher_values) + draw(space)


def check_matcher(text: str, labels: dict[str, str]) -> None:
    try:
        matcher = parse_matcher(text)
    except MatcherError:
        event("refused")
        return
    event(f"parsed {matcher.op.name}")
    assert isinstance(matcher.matches(labels), bool)
    # A matcher prints as Alertmanager writes it, and reads back as itself.
    assert parse_matcher(str(matcher)) == matcher


@fuzz(MATCHER_TEXT_EXAMPLES)
@given(st.text(max_size=60), label_sets)
@example('a=~"a{4294967296}"', {})
@example('a=~"' + "(" * 1000 + ")" * 1000 + '"', {})
def test_matcher_parser_takes_any_text(text: str, labels: dict[str, str]) -> None:
    check_matcher(text, labels)


@fuzz(MATCHER_SHAPED_EXAMPLES)
@given(matcher_texts(), label_sets)
def test_matcher_parser_takes_any_text_shaped_like_a_matcher(
    text: str, labels: dict[str, str]
) -> None:
    check_matcher(text, labels)


@fuzz(MATCHER_REGEX_EXAMPLES)
@given(
    name=st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True),
    literal=st.text(max_size=8),
    alternative=st.text(alphabet="ab.", max_size=4),
    actual=st.none() | st.text(max_size=8) | st.sampled_from(["a", "b", "ab", ".", ""]),
)
def test_regex_matchers_are_anchored_like_re_fullmatch(
    name: str, literal: str, alternative: str, actual: str | None
) -> None:
    labels = {} if actual is None else {name: actual}
    value = "" if actual is None else actual
    pattern = f"{re.escape(literal)}|{alternative}"
    expected = re.fullmatch(pattern, value) is not None
    assert parse_matcher(f"{name}=~{json.dumps(pattern)}").matches(labels) is expected
    assert parse_matcher(f"{name}!~{json.dumps(pattern)}").matches(labels) is not expected
    # An equality matcher is the regex matcher of its escaped value.
    equal = parse_matcher(f"{name}={json.dumps(literal)}")
    assert equal.op is MatchOp.EQ
    assert equal.matches(labels) is (value == literal)
    assert equal.matches(labels) is parse_matcher(
        f"{name}=~{json.dumps(re.escape(literal))}"
    ).matches(labels)


# --- rule files --------------------------------------------------------------------------

# Pieces of YAML and of the rule language; glued at random they make YAML-ish text.
YAML_TOKENS = [
    "rules:",
    "\n",
    "  ",
    "    ",
    "- ",
    "name: r",
    "match: ",
    "'a=\"b\"'",
    "assert: {fact: f}",
    "run: {flow: restart-service}",
    "guard: {key: k}",
    "firing_for: ",
    "15m",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "? ",
    "&a ",
    "*a",
    "<<: ",
    "!!binary ",
    "!!timestamp ",
    "!!int ",
    "!!set ",
    "!!python/object:os.system ",
    "'",
    '"',
    "\\",
    "# ",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "2001-02-30",
    "2001-12-14t21:59:43.10+99:00",
    "1" * 5000,
    "9" * 400 + "d",
    ".nan",
    "-.inf",
    "1e400",
    "0x1F",
    "190:20:30",
    "{{ alert.labels.instance }}",
    "{{ " + "9" * 5000 + " }}",
    "\t",
    "\x00",
    "\x85",
    "\ufeff",
    "\ud800",
    "~",
    "null",
    "true",
]
yamlish = st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=3), max_size=40).map("".join)

durations = st.one_of(
    st.integers(-5, 10**400),
    st.floats(),
    st.from_regex(r"(\d{1,400}d)?(\d{1,3}h)?(\d{1,3}m)?(\d{1,3}s)?", fullmatch=True),
    st.text(max_size=6),
)
templates = st.one_of(
    st.sampled_from(
        [
            "{{ alert.labels.instance }}",
            "restart/{{ alert.labels.instance | segment }}",
            "{{ vars.service_control_url }}",
            "{{",
            "{% for x in y %}",
            "{{ x.__class__.__mro__ }}",
            "{{ " + "(" * 400 + "1" + ")" * 400 + " }}",
            "{% for x in y %}" * 25 + "{% endfor %}" * 25,
        ]
    ),
    st.text(max_size=12),
)
fact_names = maybe(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True))
wheres = st.one_of(
    st.builds(
        lambda field, negative, value: f"{field}{'!=' if negative else '='}{json.dumps(value)}",
        st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
        st.booleans(),
        st.text(max_size=8) | st.just("{{ alert.labels.instance }}"),
    ),
    matcher_texts(),
)
fact_conditions = st.fixed_dictionaries({"fact": fact_names}, optional={"where": st.lists(wheres)})
rules = st.fixed_dictionaries(
    {
        "name": maybe(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)),
        "match": maybe(st.lists(matcher_texts() | st.just('alertname="ServiceDown"'), max_size=3)),
    },
    optional={
        "description": maybe(st.text(max_size=10)),
        "priority": maybe(st.integers()),
        "shadow": maybe(st.booleans()),
        "status": maybe(st.sampled_from(["firing", "resolved"])),
        "match_annotations": maybe(st.lists(matcher_texts(), max_size=2)),
        "when": maybe(st.lists(fact_conditions, max_size=2)),
        "unless": maybe(st.lists(fact_conditions, max_size=2)),
        "retract": maybe(st.lists(fact_conditions, max_size=2)),
        "count": maybe(
            st.fixed_dictionaries(
                {"at_least": maybe(st.integers(0, 5)), "within": durations},
                optional={"same": maybe(st.lists(label_names, max_size=2))},
            )
        ),
        "firing_for": durations,
        "assert": maybe(
            st.fixed_dictionaries(
                {"fact": fact_names},
                optional={
                    "with": maybe(st.dictionaries(label_names, templates, max_size=3)),
                    "ttl": durations,
                },
            )
        ),
        "run": maybe(
            st.fixed_dictionaries(
                {"flow": maybe(st.sampled_from(["restart-service", "clean-disk"]))},
                optional={
                    "parameters": maybe(
                        st.dictionaries(st.text(max_size=8), templates | json_values, max_size=3)
                    ),
                    "batch": maybe(
                        st.fixed_dictionaries({"window": durations, "over": st.just("hosts")})
                    ),
                },
            )
        ),
        "guard": maybe(
            st.fixed_dictionaries(
                {"key": maybe(templates)},
                optional={
                    "mutex": maybe(st.lists(templates, max_size=2)),
                    "cooldown": durations,
                    "cooldown_failed": durations,
                    "max_attempts": maybe(st.integers(-1, 5)),
                    "max_active": maybe(st.integers(-1, 5) | st.sampled_from(["25%", "0%"])),
                    "budget": maybe(
                        st.fixed_dictionaries(
                            {"max_starts": maybe(st.integers(-1, 5)), "per": durations}
                        )
                    ),
                },
            )
        ),
    },
)
SHIPPED_RULES = [yaml.safe_load(path.read_text()) for path in sorted(ROOT.glob("rules/*.yaml"))]
rule_values = st.one_of(
    json_values,
    durations,
    templates,
    matcher_texts(),
    st.lists(matcher_texts(), max_size=2),
    fact_conditions,
    rules,
)
rule_documents = st.one_of(
    mutated(st.sampled_from(SHIPPED_RULES), rule_values),
    st.fixed_dictionaries({"rules": maybe(st.lists(rules, max_size=3))}),
    json_values,
)


@st.composite
def yaml_dumps(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> str:
    """A document as YAML, in block or flow style, escaped or not."""
    document = draw(documents)
    return yaml.safe_dump(
        document,
        default_flow_style=draw(st.booleans()),
        allow_unicode=draw(st.booleans()),
        sort_keys=False,
    )


def check_rule_text(text: str) -> None:
    try:
        loaded, sources = load_rule_text(text, "fuzz.yaml")
    except RuleError as exc:
        assert_names_file_and_line(exc, "fuzz.yaml")
        event("refused")
        return
    event(f"loaded {min(len(loaded), 1)}+ rules")
    assert len(loaded) == len(sources)
    # A rule file that loads compiles for the engine.
    engine = Engine(RuleBook(tuple(loaded), tuple(sources)), partitions=2)
    engine.compile()
    engine.close()


def assert_names_file_and_line(exc: DocumentError, file: str) -> None:
    assert exc.file == file
    assert isinstance(exc.line, int)
    assert exc.line >= 1
    where = f"{file}:{exc.line}" if exc.column is None else f"{file}:{exc.line}:{exc.column}"
    assert str(exc).startswith(f"{where}: ")


@fuzz(RULE_TEXT_EXAMPLES)
@given(yamlish | st.text(max_size=40))
@example("rules: \x00")
@example("rules: 2001-02-30")
@example("rules: " + "1" * 5000)
@example("[" * 2000)
@example("rules: &a [*a]")
@example("? [a]\n: 1\n")
@example("rules: [{name: r, match: ['a=b'], assert: {fact: f}, firing_for: " + "9" * 400 + "}]")
def test_rule_loader_takes_any_text(text: str) -> None:
    check_rule_text(text)


@fuzz(RULE_SHAPED_EXAMPLES)
@given(yaml_dumps(rule_documents))
def test_rule_loader_takes_any_document_shaped_like_a_rule_file(text: str) -> None:
    check_rule_text(text)


# --- YAML flows --------------------------------------------------------------------------

parameter_specs = st.fixed_dictionaries(
    {},
    optional={
        "type": maybe(
            st.sampled_from(
                ["string", "integer", "number", "boolean", "hostname", "host", "url", "list"]
            )
        ),
        "items": maybe(st.sampled_from(["string", "integer", "host"])),
        "description": maybe(st.text(max_size=8)),
        "default": json_values,
        "required": maybe(st.booleans()),
        "pattern": maybe(regex_text | regex_limits),
        "enum": maybe(st.lists(st.text(max_size=4) | st.integers(), max_size=3)),
        "minimum": maybe(st.floats()),
        "maximum": maybe(st.floats()),
        "min_items": maybe(st.integers(-1, 3)),
        "max_items": maybe(st.integers(-1, 3)),
    },
)
step_names = maybe(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True))
expressions = st.one_of(
    st.sampled_from(["params.x > 1", "steps.a.ok", "", "(", "x.__class__"]),
    st.text(max_size=10),
)
op_steps = st.fixed_dictionaries(
    {"name": step_names, "op": maybe(st.sampled_from(["http.request", "command.run", "nope"]))},
    optional={
        "with": maybe(st.dictionaries(st.text(max_size=6), templates | json_values, max_size=3)),
        "retries": maybe(st.integers(-1, 11)),
        "retry_delay": durations,
        "timeout": durations,
        "when": maybe(expressions),
    },
)
verify_specs = st.fixed_dictionaries(
    {"prometheus": maybe(templates), "query": maybe(templates)},
    optional={
        "condition": maybe(st.sampled_from(["any", "none"])),
        "within": durations | templates,
        "every": durations | templates,
    },
)
steps = st.one_of(
    op_steps,
    st.fixed_dictionaries(
        {
            "name": step_names,
            "approval": maybe(
                st.fixed_dictionaries(
                    {"message": maybe(templates)}, optional={"timeout": durations}
                )
            ),
        }
    ),
    st.fixed_dictionaries({"name": step_names, "verify": maybe(verify_specs)}),
    st.fixed_dictionaries(
        {"name": step_names, "parallel": maybe(st.lists(op_steps, min_size=1, max_size=2))}
    ),
    st.fixed_dictionaries(
        {
            "name": step_names,
            "batch": maybe(
                st.fixed_dictionaries(
                    {
                        "over": maybe(st.just("{{ params.hosts }}")),
                        "steps": maybe(st.lists(op_steps, min_size=1, max_size=2)),
                    },
                    optional={
                        "as": step_names,
                        "size": maybe(st.sampled_from(["1", "25%", "0", "{{ params.n }}"])),
                        "pause": durations | templates,
                        "max_failures": maybe(st.integers(-1, 3)) | templates,
                        "verify": maybe(verify_specs),
                    },
                )
            ),
        }
    ),
    json_values,
)
flow_documents = st.one_of(
    st.deferred(lambda: mutated(st.sampled_from(SHIPPED_FLOWS), flow_values)),
    st.fixed_dictionaries(
        {
            "flow": maybe(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)),
            "description": maybe(st.text(min_size=1, max_size=10)),
            "steps": maybe(st.lists(steps, min_size=1, max_size=3)),
        },
        optional={
            "risk": maybe(st.sampled_from(["read", "low", "medium", "high"])),
            "tags": maybe(st.lists(st.text(max_size=4), max_size=2)),
            "parameters": maybe(
                st.dictionaries(
                    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True) | st.text(max_size=6),
                    maybe(parameter_specs),
                    max_size=3,
                )
            ),
        },
    ),
    json_values,
)
SHIPPED_FLOWS = [yaml.safe_load(path.read_text()) for path in sorted(ROOT.glob("flows/*.yaml"))]
flow_values = st.one_of(
    json_values, durations, templates, expressions, parameter_specs, steps, regex_text
)
# The operations the shipped flows use; a step naming another one is refused.
OPERATIONS = {str(_at(SHIPPED_FLOWS, p)) for p in _paths(SHIPPED_FLOWS) if p[-1:] == ("op",)}


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file the flow tests write each example to."""
    return tmp_path_factory.mktemp("fuzz-flows") / "fuzz.yaml"


def check_flow_text(path: Path, text: str, operations: set[str] | None) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        source = load_flow_file(path, operations)
    except FlowFileError as exc:
        assert_names_file_and_line_or_unreadable(exc, str(path))
        event("refused")
        return
    event("loaded")
    # A flow that loads has a parameters model, and the catalog can show its schema.
    source.spec.parameters_model.model_json_schema()
    source.spec.all_steps()


def assert_names_file_and_line_or_unreadable(exc: DocumentError, file: str) -> None:
    if exc.problem.startswith(("cannot read", "the file is empty")):
        assert exc.file == file
        return
    assert_names_file_and_line(exc, file)


@fuzz(FLOW_TEXT_EXAMPLES)
@given(text=yamlish | st.text(max_size=40), operations=st.none() | st.just(OPERATIONS))
def test_flow_loader_takes_any_text(
    flow_file: Path, text: str, operations: set[str] | None
) -> None:
    check_flow_text(flow_file, text, operations)


@fuzz(FLOW_SHAPED_EXAMPLES)
@given(text=yaml_dumps(flow_documents), operations=st.none() | st.just(OPERATIONS))
@example(
    text="flow: x\ndescription: d\nparameters: {p: {pattern: '('}}\nsteps: [{name: s, op: o}]\n",
    operations=None,
)
@example(
    text="flow: x\ndescription: d\nparameters: {p: {enum: []}}\nsteps: [{name: s, op: o}]\n",
    operations=None,
)
def test_flow_loader_takes_any_document_shaped_like_a_flow(
    flow_file: Path, text: str, operations: set[str] | None
) -> None:
    check_flow_text(flow_file, text, operations)


# --- CloudEvents -------------------------------------------------------------------------

cloud_events = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": st.text(min_size=1, max_size=10),
        "source": st.text(min_size=1, max_size=10),
        "type": st.sampled_from(["deploy.finished", "maintenance.started"]),
    },
    optional={
        "subject": st.text(max_size=10),
        "time": aware_timestamps,
        "datacontenttype": st.just("application/json"),
        "data": st.dictionaries(
            label_names | st.sampled_from(["type", "id"]),
            scalars | st.text(min_size=MAX_VALUE, max_size=MAX_VALUE + 2) | json_values,
            max_size=4,
        ),
        "ext": json_values,
    },
)
event_values = json_values | timestamps
# Bodies with the batch flag they would get (a JSON array is a batch), or the other one.
event_bodies = st.one_of(
    st.tuples(mutated(cloud_events, event_values).map(dumps), st.just(False)),
    st.tuples(mutated(st.lists(cloud_events, max_size=3), event_values).map(dumps), st.just(True)),
    st.tuples(st.binary(max_size=200), st.booleans()),
    st.tuples((cloud_events | st.lists(cloud_events, max_size=2)).map(dumps), st.booleans()),
)


def check_events(body: bytes, batch: bool) -> None:
    try:
        events = parse_events(body, batch)
    except ValidationError:
        event("refused")
        return
    event(f"accepted {min(len(events), 2)}+ events")
    for cloud_event in events:
        fact = cloud_event.fact(expires_at=0.0)
        assert fact.name == "event"
        assert all(isinstance(v, str) and len(v) <= MAX_VALUE for v in fact.fields.values())


@fuzz(EVENT_EXAMPLES)
@given(event_bodies)
def test_cloudevents_parser_takes_any_body(body_and_batch: tuple[bytes, bool]) -> None:
    check_events(*body_and_batch)


# --- the HTTP API, on a real server ------------------------------------------------------

WEBHOOK_TOKEN = "fuzz-webhook"
OPERATOR_TOKEN = "fuzz-operator"
EVENTS_TOKEN = "fuzz-events"
MAX_BODY = 4096


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@contextlib.contextmanager
def serving(service: Service, port: int) -> Iterator[str]:
    """The app on a real uvicorn server in a thread; its lifespan starts the service."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="fuzz-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass(frozen=True)
class LiveApi:
    """The running server, a client for it, and its engine error counts when it started."""

    url: str
    client: httpx.Client
    engine_errors_at_start: dict[str, float]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The whole service with the shipped rules, a SQLite store and separate credentials."""
    tmp = tmp_path_factory.mktemp("fuzz-api")
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    for rule_file in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(rule_file, rules_dir)
    port = free_port()
    settings_ = make_settings(
        tmp,
        rules_dir,
        port=port,
        bearer_token=WEBHOOK_TOKEN,
        operator_token=OPERATOR_TOKEN,
        events_token=EVENTS_TOKEN,
        max_body_bytes=MAX_BODY,
        run_request_wait_seconds=0.2,
    )
    with (
        serving(Service(settings_, prefect_api_url=None), port) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield LiveApi(url, client, engine_errors(client))


def engine_errors(client: httpx.Client) -> dict[str, float]:
    """responder_engine_errors_total by kind, read from the server's /metrics."""
    found: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        match = re.fullmatch(r'responder_engine_errors_total\{kind="(\w+)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def backlog(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    match = re.search(r"^responder_inbox_backlog (\S+)$", text, re.M)
    assert match is not None
    return float(match[1])


# What HTTP lets a client send in a header: visible ASCII, no space at either end.
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20
).map(str.strip)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "text/plain",
            "",
        ]
    ),
    header_values,
)
authorizations = st.one_of(
    st.sampled_from(
        [
            f"Bearer {WEBHOOK_TOKEN}",
            f"Bearer {EVENTS_TOKEN}",
            f"bearer  {WEBHOOK_TOKEN}",
            f"Bearer {OPERATOR_TOKEN}",
            "Basic !!!",
            "Basic Zm9vOmJhcg==",
            "",
        ]
    ),
    header_values,
)
intake_bodies = st.one_of(
    st.binary(max_size=300),
    payloads.map(dumps),
    event_bodies.map(lambda body_and_batch: body_and_batch[0]),
    st.integers(MAX_BODY - 2, MAX_BODY + 2).map(lambda n: b"[" + b" " * (n - 2) + b"]"),
)
INTAKE_STATUSES = {200, 400, 401, 413, 415, 422, 503}
INTAKE = {
    "/webhook/alertmanager": (WEBHOOK_TOKEN, payloads.map(dumps)),
    "/api/v1/events": (EVENTS_TOKEN, event_bodies.map(lambda body_and_batch: body_and_batch[0])),
}


@fuzz(INTAKE_EXAMPLES)
@given(path=st.sampled_from(sorted(INTAKE)), data=st.data())
def test_intake_answers_any_body_with_a_documented_status(
    api: LiveApi, path: str, data: st.DataObject
) -> None:
    token, bodies = INTAKE[path]
    # Mostly what a sender would send, so the fuzzer gets past authentication and type checks.
    body = data.draw(often(bodies, intake_bodies))
    content_type = data.draw(often(st.just("application/json"), st.none() | content_types))
    authorization = data.draw(often(st.just(f"Bearer {token}"), st.none() | authorizations))
    headers = {"content-type": content_type, "authorization": authorization}
    response = api.client.post(
        path, content=body, headers={k: v for k, v in headers.items() if v is not None}
    )
    event(f"{path} {response.status_code}")
    assert response.status_code in INTAKE_STATUSES, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


run_requests = st.fixed_dictionaries(
    {
        "reason": st.text(min_size=1, max_size=20),
        "requested_by": st.text(min_size=1, max_size=10),
        "parameters": st.fixed_dictionaries(
            {
                "host": often(st.sampled_from(["host-1", "10.0.0.1:9100"]), st.text(max_size=5)),
                "service": often(st.just("checkout"), st.sampled_from(["../x", "-rf", "a b"])),
                "restart_url": st.just("http://127.0.0.1:9/restart"),
                "health_url": st.just("http://127.0.0.1:9/health"),
            },
            optional={
                "verify_within_seconds": often(st.floats(0.1, 3600), scalars),
                "approval_timeout_seconds": often(st.integers(10, 86400), scalars),
            },
        ),
    },
    optional={
        "key": st.text(max_size=10),
        "mutex": st.lists(st.text(max_size=5), max_size=3),
        "cooldown": often(st.sampled_from([0, 30, "15m"]), durations),
        "approval": st.booleans(),
    },
)
RUN_STATUSES = {202, 409, 413, 422, 503}


@fuzz(RUN_EXAMPLES)
@given(body=often(mutated(run_requests, json_values | durations).map(dumps), intake_bodies))
def test_manual_runs_answer_any_body_with_a_documented_status(api: LiveApi, body: bytes) -> None:
    response = api.client.post(
        "/api/v1/catalog/flows/restart-service/runs", content=body, headers=bearer(OPERATOR_TOKEN)
    )
    event(f"{response.status_code}")
    assert response.status_code in RUN_STATUSES, response.text
    if response.status_code == 409:  # the guard refused: the decision says why
        assert response.json()["decision"]["verdict"] == "refused"
    elif response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


def test_the_engine_loop_digests_whatever_intake_accepted(api: LiveApi) -> None:
    """Run after the intake fuzz: every accepted body is processed, none breaks the loop."""
    deadline = time.monotonic() + 30
    while backlog(api.client) > 0:
        assert time.monotonic() < deadline, "the engine loop did not drain the inbox"
        time.sleep(0.1)
    errors = engine_errors(api.client)
    for kind in ("step", "bad_message", "action"):
        assert errors.get(kind, 0) == api.engine_errors_at_start.get(kind, 0), errors
    assert api.client.get("/readyz").json()["checks"]["engine"] is True


OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


def credentials_for(path: str) -> dict[str, str]:
    if path == "/webhook/alertmanager":
        return bearer(WEBHOOK_TOKEN)
    if path == "/api/v1/events" or path.startswith("/webhook/json/"):
        return bearer(EVENTS_TOKEN)
    return bearer(OPERATOR_TOKEN)


def fuzz_operation(
    api: LiveApi, session: requests.Session, operation: APIOperation, mode: GenerationMode
) -> None:
    """Cases for one operation, each sent with its credentials and without any."""

    @fuzz(API_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Case) -> None:
        for headers in (credentials_for(case.path), {}):
            response = case.call(base_url=api.url, session=session, headers=headers, timeout=30)
            event(f"{response.status_code}")
            assert response.status_code < 500 or response.status_code == 503, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
            )
            if not headers and case.path not in OPEN_PATHS:
                assert response.status_code >= 400, f"{case.method} {case.path} without credentials"

    send()


def test_api_operations_never_fail_on_the_server(api: LiveApi, subtests: pytest.Subtests) -> None:
    """Every operation of the OpenAPI document, with valid and invalid input (schemathesis):
    no 5xx but a deliberate 503, and nothing but the open endpoints answers without
    credentials."""
    schema = schemathesis.openapi.from_url(
        f"{api.url}/api/v1/openapi.json", headers=bearer(OPERATOR_TOKEN)
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    # Random names seldom hit one the catalog knows: show every entry once, by name.
    operator = bearer(OPERATOR_TOKEN)
    for entry in api.client.get("/api/v1/catalog", headers=operator).json()["catalog"]:
        response = api.client.get(f"/api/v1/catalog/{entry['name']}", headers=operator)
        assert response.status_code == 200, response.text
    with requests.Session() as session:
        for operation in operations:
            # Invalid input needs an input to break: a path parameter, a query or a body.
            takes_input = any(operation.iter_parameters()) or bool(operation.body)
            for mode in GenerationMode if takes_input else [GenerationMode.POSITIVE]:
                with subtests.test(operation=operation.label, mode=mode.value):
                    fuzz_operation(api, session, operation, mode)
