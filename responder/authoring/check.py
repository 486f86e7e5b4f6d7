"""`responder check`: rule files compiled as Responder will run them, every problem at once.

The loader's own validation (`responder.decision.rules.read_rules`: YAML, keys, values,
duplicate names, unknown flows) comes first, for every file. Then each valid rule is
compiled against what it will meet:

- every template is rendered in the sandbox (`responder.decision.templates.probe`) against
  the `rule_vars`, the labels and annotations the rule's matchers guarantee, the service
  catalog's fields and the facts its `when` joins; an event (or schedule) rule's against a
  sample `event` its matchers accept (`event.data.FIELD` of any name renders; a field of
  `event` beyond type, source, subject, id, time and data is an error). A name nothing
  defines (`vars.pagerurl`, `alert.label.instance`) is an error; a label or annotation that
  the matchers do not guarantee, or a `service.FIELD` of an alert whose service may not be in
  the catalog, is a warning: the template fails for the alerts without it;
- the parameters are checked against the flow's signature (`flow_catalog`): a name it does
  not take, a required one missing, and a literal value its type refuses are errors; a
  templated value that renders, for a sample alert, to something the type refuses is a
  warning.

Each finding names the file, the line and column of the exact key or template, the bad value
and what is accepted.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2.utils import missing

from responder.decision.decisions import template_context
from responder.decision.matchers import Matcher
from responder.decision.rules import Rule, RuleBook, RuleSource, read_rules
from responder.decision.schedules import tick_event
from responder.decision.services import ServiceCatalog, ServiceSpec, load_services
from responder.decision.templates import probe
from responder.events.cloudevents import CloudEvent
from responder.events.webhook import Alert
from responder.exceptions import CheckFailed, DocumentError
from responder.orchestration.flow_catalog import (
    REMEDIATIONS,
    flow_names,
    load_flow_files,
    operation_names,
    parameter_errors,
    parameter_fields,
    read_anew,
    use_flow_dirs,
)
from responder.settings import Settings

Severity = Literal["error", "warning"]
ParameterCheck = Callable[[str, dict[str, Any]], list[dict[str, str]]]
ParameterFields = Callable[[str], dict[str, tuple[bool, str]]]


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, where it is; ordered by file, line and column."""

    file: str
    line: int
    column: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"


def finding(error: DocumentError, severity: Severity = "error") -> Finding:
    """A finding at an error's place (line and column 1 when it names none)."""
    return Finding(
        error.file or "<input>", error.line or 1, error.column or 1, severity, error.problem
    )


@dataclass(frozen=True)
class CheckReport:
    """The rules that loaded, and every finding, in file order."""

    book: RuleBook
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]


def check_rules(
    paths: Collection[Path],
    known_flows: Collection[str],
    rule_vars: Mapping[str, str],
    catalog: ServiceCatalog,
    *,
    check_parameters: ParameterCheck = parameter_errors,
    fields_of: ParameterFields = parameter_fields,
) -> CheckReport:
    """Load every rule file as the engine does and compile each valid rule; find everything."""
    book, errors = read_rules(paths, known_flows)
    found = [finding(error) for error in errors]
    asserted = _asserted_fields(book)
    for rule, source in zip(book.rules, book.sources, strict=True):
        compiler = _RuleCompiler(rule, source, rule_vars, catalog, asserted)
        found.extend(compiler.templates())
        found.extend(compiler.tier_defaults(catalog))
        if rule.run is not None and rule.run.flow in known_flows:
            try:
                fields = fields_of(rule.run.flow)
            except DocumentError:
                continue  # a broken flow file: reported as such, its rules unchecked
            found.extend(compiler.parameters(check_parameters, fields))
    return CheckReport(book, tuple(sorted(found)))


def check_setup(
    settings: Settings, paths: Collection[Path] | None = None, *, fresh: bool = False
) -> tuple[CheckReport, dict[str, Any], list[Finding]]:
    """What `responder check` finds: the rules (`paths`, default the settings' rules_dir)
    compiled against the catalog and the flows, and the problems of the catalog's and the
    YAML flows' files (each one more finding: the rules are checked all the same). Returns
    the report, the YAML flows that loaded, and every finding in file order."""
    findings: list[Finding] = []
    flows: dict[str, Any] = {}
    use_flow_dirs(settings.flows_dir)
    try:
        catalog = load_services(settings.services_file)
    except DocumentError as exc:
        findings.append(finding(exc))
        catalog = ServiceCatalog()
    try:
        flows = load_flow_files(operations=operation_names())
    except DocumentError as exc:
        findings.append(finding(exc))
    try:
        known = flow_names()
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # a flow file reported above
        known = sorted({*REMEDIATIONS, *flows})
    models = read_anew() if fresh else None  # each flow read once for the whole check
    report = check_rules(
        paths or [settings.rules_dir],
        known,
        settings.rule_vars,
        catalog,
        check_parameters=functools.partial(parameter_errors, models=models),
        fields_of=functools.partial(parameter_fields, models=models),
    )
    return report, flows, sorted([*findings, *report.findings])


def refuse_errors(settings: Settings) -> None:
    """Raise `CheckFailed` naming every error `responder check` finds in the settings' rules,
    catalog and flows (warnings pass): what a reload runs before it loads anything. The
    flows are read as their files are now, and what was read of them before is kept: if
    this refuses, the flows in force stay with the rules."""
    _, _, findings = check_setup(settings, fresh=True)
    errors: list[dict[str, str | int]] = [
        {"file": f.file, "line": f.line, "column": f.column, "message": f.message}
        for f in findings
        if f.severity == "error"
    ]
    if errors:
        raise CheckFailed(errors)


def guaranteed_labels(rule: Rule, annotations: bool = False) -> dict[str, str]:
    """The labels (or annotations) every alert the rule matches has, each with a sample value.

    A missing label equals "", so a matcher that refuses "" guarantees its label.
    """
    return guaranteed_labels_of(rule.annotation_matchers if annotations else rule.matchers)


def guaranteed_labels_of(matchers: Iterable[Matcher]) -> dict[str, str]:
    """The names these matchers guarantee, each with a sample value."""
    found: dict[str, str] = {}
    for matcher in matchers:
        if not matcher.matches({}) and matcher.name not in found:
            candidates = [matcher.value]
            if matcher.op.is_regex:  # its plain alternatives first: `critical|page`
                parts = re.split(r"[|()^$]", matcher.value)
                candidates = [p for p in parts if not re.search(r"[.*+?\[\]{}\\]", p)]
            sample = matcher.name.replace("_", "-")  # a label name makes a fair host name
            candidates += [sample, f"{sample}-1", matcher.value]
            found[matcher.name] = next(
                (c for c in candidates if c and matcher.matches({matcher.name: c})), matcher.name
            )
    return found


def sample_event(rule: Rule) -> CloudEvent:
    """An event the rule matches, as far as its matchers tell: what they require (that
    refuses ""), else a sample; a schedule's tick, for a schedule rule."""
    if rule.schedule is not None:
        return tick_event(rule.name, datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    fields = {"type": "sample.event", "source": "sample", "subject": "sample", "id": "1"}
    data: dict[str, Any] = {}
    for matcher in rule.event_matchers:
        value = guaranteed_labels_of([matcher]).get(matcher.name)
        if value is None:
            continue
        if matcher.name.startswith("data."):
            *parents, leaf = matcher.name.split(".")[1:]
            here = data
            for part in parents:
                here = here.setdefault(part, {})
            here[leaf] = value
        else:
            fields[matcher.name] = value
    return CloudEvent(specversion="1.0", data=data, **fields)


class _AnyData(dict[str, Any]):
    """An event's data beyond what the matchers guarantee: any field has a sample value."""

    def __missing__(self, key: str) -> str:
        return _Sample(key)


class _Sample(str):
    """A sample value of data the matchers do not describe: text, whose fields (nested
    data: `event.data.event.data.namespace`) are samples too."""

    __slots__ = ()

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Sample(name)


class _AnyFields(dict[str, str]):
    """The fields of a fact whose fields are not known in advance (events, outcomes...)."""

    def __missing__(self, key: str) -> str:
        return key


def _asserted_fields(book: RuleBook) -> dict[str, set[str]]:
    """The fields of each fact the rules assert; the catalog's `service` fact's too."""
    sample = ServiceCatalog(services={"s": ServiceSpec(tier=0)}).facts(now=0.0)[0]
    fields: dict[str, set[str]] = {sample.name: set(sample.fields)}
    for rule in book.rules:
        if rule.assert_ is not None and rule.assert_.fact != sample.name:
            fields.setdefault(rule.assert_.fact, set()).update(rule.assert_.fields)
    return fields


class _RuleCompiler:
    """One rule's templates and parameters, against the context its decisions will have."""

    def __init__(
        self,
        rule: Rule,
        source: RuleSource,
        rule_vars: Mapping[str, str],
        catalog: ServiceCatalog,
        asserted: Mapping[str, set[str]],
    ) -> None:
        self.rule = rule
        self.source = source
        self.labels = guaranteed_labels(rule)
        event = sample_event(rule) if not rule.on_alerts else None
        alert = (
            event.as_alert()
            if event is not None
            else Alert.model_validate(
                {
                    "status": rule.status,
                    "labels": self.labels,
                    "annotations": guaranteed_labels(rule, annotations=True),
                    "startsAt": datetime.now(UTC),
                    "fingerprint": "0",
                }
            )
        )
        joined = {
            c.fact: {f: f for f in asserted[c.fact]} if c.fact in asserted else _AnyFields()
            for c in rule.when
        }
        seen = None
        if event is not None:  # data beyond what the matchers guarantee: any field, a sample
            seen = event.context() | {"data": _AnyData(event.data or {})}
        self.context = template_context(alert, rule_vars, joined, catalog, seen)
        if seen is not None:
            self.context["event"] = seen  # kept as it is: `_AnyData` answers any field
        for name, fields in joined.items():  # kept as they are: `_AnyFields` answers any
            self.context["facts"][name] = fields
        self.rendered: dict[tuple[str | int, ...], str] = {}  # the templates without problems

    def templates(self) -> Iterator[Finding]:
        """Render every template; a finding for each name nothing stands behind (one per
        label or annotation the matchers do not guarantee, where the rule first uses it)."""
        unguaranteed: dict[tuple[str, str], list[tuple[str | int, ...]]] = {}
        for loc, source, name in _templates_of(self.rule):
            result = probe(source, self.context, name=name)
            problems = []
            for owner, used, why in result.unvouched:
                kind = self._kind_of_labels(owner)
                if kind is not None:
                    unguaranteed.setdefault((kind, str(used)), []).append(loc)
                else:
                    problems.append(self._problem(owner, used, why))
            if result.failure is not None:
                problems.append(("error", result.failure))
            for severity, message in problems:
                yield self._at(loc, severity, f"rule {self.rule.name!r}: {message}")
            if not result.unvouched and result.failure is None and result.output is not None:
                self.rendered[loc] = result.output
        for (kind, used), locs in unguaranteed.items():
            yield self._unguaranteed(kind, used, locs)

    def _kind_of_labels(self, owner: object) -> str | None:
        alert = self.context["alert"]
        if owner is alert["labels"]:
            return "label"
        return "annotation" if owner is alert["annotations"] else None

    def _unguaranteed(self, kind: str, used: str, locs: list[tuple[str | int, ...]]) -> Finding:
        keys = "match" if kind == "label" else "match_annotations"
        guaranteed = _listed(self.context["alert"][f"{kind}s"])
        lines = sorted({self.source.location(*loc)[0] for loc in locs[1:]})
        plural = "s" if len(lines) > 1 else ""
        also = f" (and on line{plural} {', '.join(map(str, lines))})" if lines else ""
        return self._at(
            locs[0],
            "warning",
            f"rule {self.rule.name!r}: {kind} {used!r} is not guaranteed by its {keys} "
            f"(guaranteed: {guaranteed}): an alert without it fails this template{also}; "
            f"match it ('{used}!=\"\"') or give a default "
            f"({{{{ alert.{kind}s.{used} | default('') }}}})",
        )

    def _problem(self, owner: object, used: str | None, why: str) -> tuple[Severity, str]:
        context, alert = self.context, self.context["alert"]
        if owner is context["vars"]:
            return "error", f"vars.{used} is not defined; rule_vars defines: {_listed(owner)}"
        if owner is alert:
            return "error", f"alert has no field {used!r}; accepted: {_listed(owner)}"
        event: dict[str, Any] | None = context.get("event")
        if event is not None and owner is event:
            return "error", f"event has no field {used!r}; accepted: {_listed(event)}"
        if owner is context["service"]:
            fields = ["name", *ServiceSpec.model_fields]
            if used not in fields:
                return "error", f"service has no field {used!r}; accepted: {', '.join(fields)}"
            return "warning", (
                f"service.{used}: the rule's matchers name no service of the catalog, and "
                "`service` is {} for an alert whose service is not in it (give a default: "
                f"{{{{ service.{used} | default('') }}}})"
            )
        if owner is context["facts"]:
            return "error", f"facts.{used}: the rule's `when` joins no fact {used!r}; " + (
                f"it joins: {_listed(owner)}"
            )
        for fact, fields in context["facts"].items():
            if owner is fields:
                return "error", f"fact {fact!r} has no field {used!r}; its fields: {_listed(owner)}"
        if owner is missing:
            return "error", f"{used!r} is undefined; templates see: {_listed(context)}"
        return "error", why

    def parameters(
        self, check: ParameterCheck, fields: Mapping[str, tuple[bool, str]]
    ) -> Iterator[Finding]:
        """The parameters, rendered for a sample alert, against the flow's signature."""
        run, guard = self.rule.run, self.rule.guard
        assert run is not None and guard is not None  # a rule with `run` has its guard
        parameters = self._rendered_parameters(run.parameters, ("run", "parameters"))
        if guard.approval or self.context["service"].get("approval"):
            parameters["approval_required"] = True  # as `decide` adds it
        takes = ", ".join(
            f"{n}: {t}" + ("" if required else " (optional)") for n, (required, t) in fields.items()
        )
        for error in check(run.flow, parameters):
            path = tuple(int(p) if p.isdigit() else p for p in error["field"].split("."))
            loc, top = ("run", "parameters", *path), str(path[0])
            if top not in fields:
                close = difflib.get_close_matches(top, list(fields), n=1)
                meant = f" (did you mean {close[0]!r}?)" if close else ""
                yield self._at(
                    loc,
                    "error",
                    f"rule {self.rule.name!r}: flow {run.flow!r} takes no parameter "
                    f"{top!r}{meant}; it takes: {takes}",
                    key=True,
                )
            elif top not in parameters:
                yield self._at(
                    ("run", "parameters"),
                    "error",
                    f"rule {self.rule.name!r}: flow "
                    f"{run.flow!r} requires parameter {top!r} ({fields[top][1]})",
                    key=True,
                )
            else:
                rendered = _value_at(parameters, path)
                yield from self._refused(loc, run.flow, error, rendered, fields[top][1])

    def _refused(
        self,
        loc: tuple[str | int, ...],
        flow: str,
        error: Mapping[str, str],
        rendered: Any,
        type_name: str,
    ) -> Iterator[Finding]:
        value = _value_at(self.rule.run.parameters if self.rule.run else {}, loc[2:])
        templated = _templated_under(value)
        if any(at not in self.rendered for at, _, _ in _strings(value, loc)):
            return  # a template of it has a problem of its own, reported already
        what = f"renders to {rendered!r} for a sample alert" if templated else f"{value!r}"
        yield self._at(
            loc,
            "warning" if templated else "error",
            f"rule {self.rule.name!r}: parameter {error['field']} {what}, which flow {flow!r} "
            f"refuses: {error['message']} (it takes {type_name})",
        )

    def _rendered_parameters(self, value: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            return self.rendered.get(loc, value) if _templated_under(value) else value
        if isinstance(value, dict):
            return {k: self._rendered_parameters(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._rendered_parameters(v, (*loc, i)) for i, v in enumerate(value)]
        return value

    def tier_defaults(self, catalog: ServiceCatalog) -> Iterator[Finding]:
        """An error for each guard key the rule sets looser than the defaults of a tier it
        covers (a rule may tighten them, never loosen them)."""
        if self.rule.guard is None:
            return
        for tier, why in tiers_covered(self.rule, catalog).items():
            for name, problem in catalog.tiers[tier].looser(self.rule.guard):
                yield self._at(
                    ("guard", name),
                    "error",
                    f"rule {self.rule.name!r}: guard.{name} {problem}, the default of tier "
                    f"{tier} ({why}); a rule may tighten its tier's defaults, never loosen them",
                )

    def _at(
        self, loc: tuple[str | int, ...], severity: Severity, message: str, *, key: bool = False
    ) -> Finding:
        line, column = self.source.location(*loc, key=key)
        return Finding(self.source.file, line, column, severity, message)


def tiers_covered(rule: Rule, catalog: ServiceCatalog) -> dict[int, str]:
    """The tiers with defaults whose services the rule may act on, each with why: a service
    its `service` matchers let through, or a `service` fact its `when` joins on a tier."""
    found: dict[int, str] = {}
    matchers = [m for m in rule.matchers if m.name == "service"]
    if matchers:
        for name, spec in catalog.services.items():
            if spec.tier in catalog.tiers and all(m.matches({"service": name}) for m in matchers):
                found.setdefault(spec.tier, f"service {name}")
    for condition in rule.when:
        if condition.fact != "service":
            continue
        for test in condition.tests:
            if test.field == "tier" and not test.negative and test.label is None:
                tier = int(test.value) if test.value.isdigit() else -1
                if tier in catalog.tiers:
                    found.setdefault(tier, f'when service tier="{tier}"')
    return found


def _templates_of(rule: Rule) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """Every template of a rule: where it is (YAML keys), its text, and whether it names a
    guard key or lock."""
    if rule.run is not None:
        yield from _strings(rule.run.parameters, ("run", "parameters"))
    if rule.guard is not None:
        yield ("guard", "key"), rule.guard.key, True
        for i, name in enumerate(rule.guard.mutex):
            yield ("guard", "mutex", i), name, True
    if rule.assert_ is not None:
        for field, template in rule.assert_.fields.items():
            yield ("assert", "with", field), template, False


def _strings(
    value: Any, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    if isinstance(value, str) and _templated_under(value):
        yield loc, value, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*loc, i))


def _templated_under(value: Any) -> bool:
    """Whether a value is, or holds, a template (as `render_value` renders them)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_templated_under(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated_under(v) for v in value)
    return False


def _value_at(value: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _listed(names: Mapping[str, Any]) -> str:
    return ", ".join(sorted(names)) or "(none)"
