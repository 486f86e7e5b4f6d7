"""Monitoring Responder itself: the Prometheus alerting rules (checked by promtool) and the
Grafana dashboard built on the exported metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import responder.metrics
from responder.runtime.service import Service
from tests.helpers import ROOT, app_client, make_settings

RULES = ROOT / "config" / "prometheus" / "responder-alerts.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make system-deps` installs Debian's prometheus"
    return subprocess.run(
        [binary, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "responder-alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_only_use_metrics_responder_exports() -> None:
    exported = {
        sample.name.removesuffix("_total")
        for family in REGISTRY.collect()
        for sample in family.samples
    } | {family.name for family in REGISTRY.collect()}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = {
        name.removesuffix("_total")
        for group in groups
        for rule in group["rules"]
        for name in re.findall(r"responder_[a-z_]+", rule["expr"])
    }
    assert used, "the rules use Responder's metrics"
    assert used <= exported, used - exported


# --- The Grafana dashboard (config/grafana/responder-dashboard.json) -------------------------

DASHBOARD = ROOT / "config" / "grafana" / "responder-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Metric names a panel may use although Responder's /metrics does not export them, and why.
NOT_EXPORTED_BY_RESPONDER = {
    # Prometheus writes `up` for every scrape target itself (alert ResponderDown uses it too).
    "up",
}
# Concrete values for the template variables, so that promtool can parse the expressions.
VARIABLE_VALUES = {
    "job": "responder",
    "instance": ".*",
    "__rate_interval": "2m",
    "__interval": "1m",
    "__range": "1h",
}
PROMQL_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      |(?P<range>\[[^\]]*\])
      |(?P<number>\d[\w.]*)
      |(?P<name>[a-zA-Z_:][\w:]*)
      |(?P<other>\S)""",
    re.VERBOSE,
)
PROMQL_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_KEYWORDS = PROMQL_GROUPING | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
AFTER_CALLS = {"(", "by", "without"}  # what follows a function or an aggregation's name


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(dashboard_panels(panel.get("panels", [])))
    return found


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, keyed by a recording-rule name saying where
    it is: panel targets, and the selectors inside the variables' label_values() queries.
    """
    board = dashboard()
    queries = {
        f"dashboard:panel_{panel['id']}_{target['refId']}": target["expr"]
        for panel in dashboard_panels(board["panels"])
        for target in panel.get("targets", [])
    }
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", text)
            assert selector, f"variable {variable['name']}: {text!r} is not label_values(…)"
            queries[f"dashboard:variable_{variable['name']}"] = selector[1]
    return queries


def concrete(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in VARIABLE_VALUES, f"unknown template variable ${name} in {expr!r}"
        return VARIABLE_VALUES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def promql_names(expr: str) -> tuple[list[tuple[str, dict[str, str]]], set[str]]:
    """The selectors of a PromQL expression as (metric name, {label: matcher value}), and the
    label names of its by/without/on/ignoring/group_* clauses.
    """
    tokens = [(m.lastgroup, m[0]) for m in PROMQL_TOKEN.finditer(expr)]
    selectors: list[tuple[str, dict[str, str]]] = []
    grouping: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "name" and text in PROMQL_GROUPING and following == "(":
            end = next(j for j in range(i, len(tokens)) if tokens[j][1] == ")")
            grouping |= {t for k, t in tokens[i + 2 : end] if k == "name"}
            i = end
        elif kind == "name" and text not in PROMQL_KEYWORDS and following not in AFTER_CALLS:
            matchers: dict[str, str] = {}
            if following == "{":
                end = next(j for j in range(i, len(tokens)) if tokens[j][1] == "}")
                inside = tokens[i + 2 : end]
                for j, (k, label) in enumerate(inside):
                    if k == "name":
                        matchers[label] = next(t for kk, t in inside[j:] if kk == "string")
                i = end
            selectors.append((text, matchers))
        i += 1
    return selectors, grouping


def test_the_dashboard_loads_with_unique_panel_ids_and_the_datasource_variable() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE, name
    panels = dashboard_panels(board["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(i for i in set(ids) if ids.count(i) > 1)
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        assert panel.get("description"), where
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, where
            assert target["expr"].strip(), where
    refids = [(panel["id"], target["refId"]) for panel in queried for target in panel["targets"]]
    assert len(refids) == len(set(refids))


def test_promtool_accepts_every_dashboard_expression(tmp_path: Path) -> None:
    queries = dashboard_queries()
    rules = [{"record": name, "expr": concrete(expr)} for name, expr in queries.items()]
    assert not [r for r in rules if "$" in r["expr"]], "a template variable was not replaced"
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout, checked.stdout
    # The same check rejects an expression that is not PromQL.
    rules.append({"record": "dashboard:broken", "expr": "sum(rate(responder_leader[5m])"})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


async def scrape(tmp_path: Path, rules_dir: Path) -> str:
    """The text of a running Responder's GET /metrics (SQLite store, no Prefect)."""
    service = Service(make_settings(tmp_path, rules_dir), prefect_api_url=None)
    await service.start()
    try:
        async with app_client(service) as client:
            response = await client.get("/metrics")
    finally:
        await service.stop()
    assert response.status_code == 200
    return response.text


# The sample names of a metric family, by its type (a family's name has no _total).
SUFFIXES = {
    "counter": ["_total"],
    "histogram": ["_bucket", "_sum", "_count"],
    "summary": ["", "_sum", "_count"],
}


async def test_the_dashboard_only_uses_exported_metrics_and_labels(
    tmp_path: Path, rules_dir: Path
) -> None:
    """Metric names (with their _total/_bucket/_sum/_count forms) come from a real scrape,
    the label names of each metric from responder.metrics; `job` and `instance` are the
    target's, `le` the buckets'.
    """
    labels: dict[str, set[str]] = {}
    declared = {
        metric._name: set(metric._labelnames)
        for metric in vars(responder.metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }
    for family in text_string_to_metric_families(await scrape(tmp_path, rules_dir)):
        for suffix in SUFFIXES.get(family.type, [""]):
            labels[family.name + suffix] = set(declared.get(family.name, set()))
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    for name in labels:
        labels[name] |= {"job", "instance"} | ({"le"} if name.endswith("_bucket") else set())
    assert "responder_webhooks_total" in labels, "labelled counters are exported before use"
    assert "process_resident_memory_bytes" in labels

    unknown_metrics: set[str] = set()
    unknown_labels: list[str] = []
    unfiltered: list[str] = []
    for where, expr in dashboard_queries().items():
        selectors, grouping = promql_names(expr)
        assert selectors, f"{where}: no metric in {expr!r}"
        known = [name for name, _ in selectors if name in labels]
        unknown_metrics |= {name for name, _ in selectors} - set(labels)
        for name, matchers in selectors:
            if name in labels:
                unknown_labels += [f"{where}: {name}{{{m}}}" for m in set(matchers) - labels[name]]
            if where.startswith("dashboard:panel") and matchers.get("job") != '"$job"':
                unfiltered.append(f"{where}: {name}")
        usable = set().union(*(labels[name] for name in known)) if known else {"job", "instance"}
        unknown_labels += [f"{where}: by/on {label}" for label in grouping - usable]
    assert not unknown_metrics - NOT_EXPORTED_BY_RESPONDER, sorted(
        unknown_metrics - NOT_EXPORTED_BY_RESPONDER
    )
    assert not unknown_labels, unknown_labels
    assert not unfiltered, f'selectors without job="$job": {unfiltered}'


def test_promql_names_finds_metrics_and_labels() -> None:
    """The small PromQL reader used above: names of functions, keywords, labels, strings and
    durations are not metric names.
    """
    selectors, grouping = promql_names(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{job="$job",x=~"y"}[5m])))'
        ' / on(instance) group_left b offset 1h > bool 0 and c{l="sum(d)"}'
    )
    assert selectors == [
        ("a_bucket", {"job": '"$job"', "x": '"y"'}),
        ("b", {}),
        ("c", {"l": '"sum(d)"'}),
    ]
    assert grouping == {"le", "instance"}


def test_the_dashboard_points_at_every_alert_rule_it_names() -> None:
    """Each alert rule has a panel whose description names it, and no description names an
    alert that does not exist.
    """
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    named = {
        name
        for panel in dashboard_panels(dashboard()["panels"])
        for name in re.findall(r"\bResponder[A-Z]\w+", panel.get("description", ""))
    }
    assert named - alerts == set(), "descriptions name alerts that do not exist"
    assert alerts - named == set(), "alerts no panel description points at"
