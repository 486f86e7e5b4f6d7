"""Rule files: `safe_load` → validate (unknown keys rejected) → frozen `Rule` models.

Errors name the file, the line and what is accepted. Compiling rules for the engine is
`responder.decision.engine`'s job; this module knows nothing of durable_rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from responder.decision.documents import (
    Spec,
    location_of,
    node_at,
    read_document,
    validation_errors,
)
from responder.decision.matchers import Matcher, parse_matcher
from responder.decision.schedules import check_cron, zone
from responder.decision.templates import compile_template, valid_templates
from responder.durations import Duration
from responder.events.webhook import AlertStatus
from responder.exceptions import ResponderError, RuleError

RuleName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", strict=True)]


def _parses_with(parse: Callable[[str], object]) -> Callable[[str], str]:
    """A pydantic validator that runs `parse` and reports its error as the field's."""

    def valid(text: str) -> str:
        try:
            parse(text)
        except RuleError as exc:
            raise ValueError(exc.problem) from None
        except ResponderError as exc:
            raise ValueError(str(exc)) from None
        return text

    return valid


@lru_cache(maxsize=4096)
def _parsed_matcher(text: str) -> Matcher:
    return parse_matcher(text)


_valid_matcher = _parses_with(_parsed_matcher)
_valid_template = _parses_with(compile_template)

# What an event matcher, `same` or join names: an attribute, or a path into the event's data.
EVENT_PATH = re.compile(r"^(type|source|subject|id|data(\.[a-zA-Z_][a-zA-Z0-9_]*)+)$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
FieldPath = Annotated[
    str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*(\.[a-zA-Z_][a-zA-Z0-9_]*)*$")
]


def _event_matcher(text: str) -> Matcher:
    matcher = _parsed_matcher(text)
    if not EVENT_PATH.match(matcher.name):
        raise RuleError(
            f"event matcher {text!r}: {matcher.name!r} is no event field; accepted: type, "
            "source, subject, id, or data.FIELD (data.a.b for nested data)"
        )
    return matcher


EventMatcherText = Annotated[str, AfterValidator(_parses_with(_event_matcher))]


MatcherText = Annotated[str, AfterValidator(_valid_matcher)]

TemplateText = Annotated[str, StringConstraints(min_length=1), AfterValidator(_valid_template)]


def _constant_secret_names(parameters: dict[str, Any]) -> dict[str, Any]:
    names = parameters.get("headers_from_env") or {}
    if any("{" in str(value) for value in (names.values() if isinstance(names, dict) else [])):
        raise ValueError(
            "headers_from_env names environment variables; they are constants, never templates"
        )
    return parameters


class RunBatch(Spec):
    """Merge this rule's admitted decisions into one flow run over all their hosts."""

    window: Duration = Field(
        description="How long the first admitted decision waits for others to join it."
    )
    over: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")] = Field(
        description="The list parameter merged across decisions, e.g. hosts; the other "
        "parameters must be equal for decisions to share a run."
    )


class RunSpec(Spec):
    """Which flow a rule runs, and its parameters (templates over `alert` and `vars`)."""

    flow: str = Field(description="Name of a remediation flow in flows/.")
    parameters: Annotated[
        dict[str, Any], AfterValidator(valid_templates), AfterValidator(_constant_secret_names)
    ] = Field(default_factory=dict)
    batch: RunBatch | None = Field(
        None, description="Machine batching: many alerts, one flow run (e.g. a rollout)."
    )

    @model_validator(mode="after")
    def _batched_parameter_is_a_list(self) -> RunSpec:
        if self.batch is not None and not isinstance(self.parameters.get(self.batch.over), list):
            raise ValueError(
                f"batch.over names parameter {self.batch.over!r}, which must be a list "
                f'(e.g. {self.batch.over}: ["{{{{ alert.labels.instance }}}}"])'
            )
        return self


Percentage = Annotated[str, StringConstraints(pattern=r"^(100|[1-9][0-9]?)%$")]


class BudgetSpec(Spec):
    """At most `max_starts` admitted remediations per `per` window, for the flow or for all."""

    max_starts: int = Field(ge=1, description="Starts allowed in one window.")
    per: Duration = Field(description="The window, e.g. 1h.")
    scope: Literal["flow", "global"] = Field("flow", description="Count this flow, or all.")


class GuardSpec(Spec):
    """The guard policy a rule's decisions carry."""

    key: TemplateText = Field(description="At most one active remediation per rendered key.")
    key_scope: Literal["rule", "shared"] = Field(
        "rule",
        description="`rule`: the key is this rule's own (stored as RULE:KEY); `shared`: rules "
        "whose keys render the same share one key.",
    )
    mutex: list[TemplateText] = Field(
        default_factory=list,
        description="Lock names (templates) taken together or not at all, e.g. host:{{...}}.",
    )
    cooldown: Duration = Field(0.0, description="After a run ends, refuse the key this long.")
    cooldown_failed: Duration | None = Field(
        None, description="Cooldown after a run that did not complete; default `cooldown`."
    )
    max_attempts: int | None = Field(
        None, ge=1, description="Admitted attempts per incident before the guard refuses."
    )
    max_active: Annotated[int, Field(ge=1)] | Percentage | None = Field(
        None,
        description="Blast radius: at most this many active runs, or this percentage of the "
        "service's hosts (its `hosts` in the catalog), e.g. 25%.",
    )
    max_active_per: Literal["flow", "service"] = Field(
        "flow",
        description="Count active runs of this flow (any service), or active runs of any "
        "flow on the alert's service (its `service` label).",
    )
    budget: BudgetSpec | None = None
    approval: bool = Field(
        False,
        description="The flow run waits for a person's approval in the Prefect UI "
        "(also when the alert's service requires approval in the catalog).",
    )
    silence: bool = Field(
        False,
        description="Silence the alert in Alertmanager while the remediation runs "
        "(needs alertmanager_url); lifted when the run ends.",
    )
    act_when_resolved: bool = Field(
        False,
        description="Let the run act after its alert resolved. By default each step that "
        "changes something first asks Responder, and the run is cancelled ('alert resolved "
        "before acting') once the alert has resolved.",
    )


FactName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$", strict=True)]
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")]
_JOIN = re.compile(
    r"^\{\{\s*(?:alert\.labels\.([a-zA-Z_][a-zA-Z0-9_]*)"
    r"|event\.(type|source|subject|id|data(?:\.[a-zA-Z_][a-zA-Z0-9_]*)+))\s*\}\}$"
)


@dataclass(frozen=True)
class FactTest:
    """One `where` condition on a fact field: a constant, or a join with an alert label."""

    field: str
    negative: bool
    value: str
    label: str | None  # set when the value is exactly {{ alert.labels.<label> }}
    on_event: bool = False  # the join is {{ event.<path> }} (the label is the path)


@lru_cache(maxsize=4096)
def _parsed_where(text: str) -> FactTest:
    matcher = _parsed_matcher(text)
    if matcher.op.is_regex:
        raise RuleError(f"where {text!r}: only = and != are accepted on facts")
    join = _JOIN.match(matcher.value)
    if join is None and ("{{" in matcher.value or "{%" in matcher.value):
        raise RuleError(
            f"where {text!r}: a value is a constant or exactly {{{{ alert.labels.NAME }}}} "
            "(on an event: {{ event.subject }}, {{ event.data.FIELD }}, ...)"
        )
    label = (join.group(1) or join.group(2)) if join else None
    return FactTest(
        matcher.name,
        matcher.op.is_negative,
        matcher.value,
        label,
        bool(join and join.group(2)),
    )


_valid_where = _parses_with(_parsed_where)
WhereText = Annotated[str, AfterValidator(_valid_where)]


class FactCondition(Spec):
    """A fact that must exist (`when`) or must not (`unless`) for the rule to hold."""

    fact: FactName
    where: list[WhereText] = Field(default_factory=list)

    @property
    def tests(self) -> tuple[FactTest, ...]:
        return tuple(_parsed_where(w) for w in self.where)


class AssertSpec(Spec):
    """A fact the rule asserts when it holds; other rules can require or exclude it."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    fact: FactName
    fields: dict[FieldName, TemplateText] = Field(default_factory=dict, alias="with")
    ttl: Duration = Field(3600.0, gt=0, description="The fact expires after this long.")


class CountSpec(Spec):
    """At least `at_least` matching alerts (or events) within `within`, grouped by the `same`
    labels (or event fields)."""

    at_least: int = Field(ge=2)
    within: Duration = Field(gt=0)
    same: list[FieldPath] = Field(default_factory=list)


class SequenceSpec(Spec):
    """A sequence: an alert matching `match`, with the same `same` labels, started before
    this one, at most `within` earlier (and arrived before it)."""

    match: list[MatcherText] = Field(min_length=1)
    same: list[FieldPath] = Field(default_factory=list)
    within: Duration = Field(gt=0)

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return tuple(_parsed_matcher(m) for m in self.match)


class AbsenceSpec(Spec):
    """Absence: the rule holds when no event matching `match`, with the same `same` fields
    as the one that started it, arrives within `within` after it (a durable timer)."""

    match: list[EventMatcherText] = Field(min_length=1)
    within: Duration = Field(gt=0)
    same: list[Annotated[str, StringConstraints(pattern=EVENT_PATH.pattern)]] = Field(
        default_factory=list
    )

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return tuple(_event_matcher(m) for m in self.match)


def _valid_zone(name: str) -> str:
    zone(name)
    return name


class ScheduleSpec(Spec):
    """A cron schedule: each tick is an event the rule decides on (caught up once after
    downtime). The time zone is required: "0 2 * * *" is 02:00 where?"""

    cron: Annotated[str, AfterValidator(_parses_with(check_cron))] = Field(
        description='Five fields ("0 2 * * *"), or six with seconds first.'
    )
    timezone: Annotated[str, AfterValidator(_parses_with(_valid_zone))] = Field(
        description="An IANA time zone name: UTC, Europe/Paris, ..."
    )


# The longest a rule may wait before acting (`settle`): a correlation window, not a delay.
MAX_SETTLE_SECONDS = 600


class Rule(Spec):
    """One rule: when its conditions hold for an alert, decide, assert or retract."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: RuleName
    description: str = ""
    priority: int = Field(0, description="Higher-priority rules are decided first.")
    shadow: bool = Field(False, description="Record what the rule would do; never dispatch.")
    status: AlertStatus = Field("firing", description="Match firing alerts, or resolutions.")
    match: list[MatcherText] = Field(
        default_factory=list, description="Alert label matchers: the rule decides on alerts."
    )
    event: list[EventMatcherText] = Field(
        default_factory=list,
        description="Event matchers (type, source, subject, id, data.FIELD): the rule "
        "decides on events (CloudEvents) instead of alerts.",
    )
    schedule: ScheduleSpec | None = Field(
        None, description="The rule decides on each tick of a cron schedule."
    )
    not_followed_by: AbsenceSpec | None = Field(
        None, description="An event rule holds only once no follower came in time (absence)."
    )
    match_annotations: list[MatcherText] = Field(default_factory=list)
    when: list[FactCondition] = Field(default_factory=list)
    unless: list[FactCondition] = Field(default_factory=list)
    count: CountSpec | None = None
    after: SequenceSpec | None = Field(
        None, description="Hold only after another alert on the same labels (a sequence)."
    )
    firing_for: Duration | None = Field(
        None, gt=0, description="Hold only once the alert has fired this long unresolved."
    )
    settle: Duration | None = Field(
        None,
        gt=0,
        le=MAX_SETTLE_SECONDS,
        description="Once the rule holds, wait this long (at most 10m) before acting, so "
        "that correlated alerts and facts can land first; then act if it still holds.",
    )
    assert_: AssertSpec | None = Field(None, alias="assert")
    retract: list[FactCondition] = Field(default_factory=list)
    run: RunSpec | None = None
    guard: GuardSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if (self.run is None) != (self.guard is None):
            raise ValueError("`run` and `guard` go together: a remediation needs its guard key")
        if self.run is None and self.assert_ is None and not self.retract:
            raise ValueError("a rule needs at least one of run, assert or retract")
        if self.status == "resolved" and (
            self.when or self.unless or self.count or self.after or self.firing_for or self.settle
        ):
            raise ValueError("a rule on resolved alerts accepts match and match_annotations only")
        if [bool(self.match), bool(self.event), self.schedule is not None].count(True) != 1:
            raise ValueError(
                "a rule decides on one thing: alerts (`match`), events (`event`) or a "
                "schedule (`schedule`); give exactly one"
            )
        return self._consistent_trigger()

    def _consistent_trigger(self) -> Rule:
        if self.match:
            names = [m.name for m in (*self.matchers, *(self.after.matchers if self.after else ()))]
            names += [
                *(self.count.same if self.count else ()),
                *(self.after.same if self.after else ()),
            ]
            dotted = [n for n in names if not _LABEL.match(n)]
            if dotted:
                raise ValueError(f"{dotted[0]!r} is no label name (dotted paths are for events)")
            if self.not_followed_by is not None:
                raise ValueError("not_followed_by is for event rules (`event`)")
            conditions = (*self.when, *self.unless, *self.retract)
            if any(t.on_event for c in conditions for t in c.tests):
                raise ValueError("a rule on alerts joins {{ alert.labels.NAME }}, not event.*")
            return self
        unfit = [k for k in ("match_annotations", "firing_for", "settle") if getattr(self, k)]
        if self.status != "firing" or unfit:
            raise ValueError(
                f"an event or schedule rule does not take {(unfit or ['status'])[0]}; it takes "
                "when, unless, count, after, not_followed_by, assert, retract, run and guard"
            )
        if self.schedule is not None and (self.not_followed_by or self.count or self.after):
            raise ValueError("a schedule rule takes no count, after or not_followed_by")
        return self

    @property
    def on_alerts(self) -> bool:
        """Whether the rule decides on alerts (else on events or a schedule's ticks)."""
        return bool(self.match)

    @property
    def event_matchers(self) -> tuple[Matcher, ...]:
        return tuple(_event_matcher(m) for m in self.event)

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return tuple(_parsed_matcher(m) for m in self.match)

    @property
    def annotation_matchers(self) -> tuple[Matcher, ...]:
        return tuple(_parsed_matcher(m) for m in self.match_annotations)


class RuleFile(Spec):
    """The top level of a rule file."""

    rules: list[Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class RuleSource:
    """Where a rule was defined, for error messages and explanations; `node` is the rule's
    YAML, for the line and column of each of its keys."""

    file: str
    line: int
    node: yaml.Node | None = field(default=None, compare=False, repr=False)

    def location(self, *loc: str | int, key: bool = False) -> tuple[int, int]:
        """The line and column of a key of the rule (its value, or with `key` the key)."""
        return location_of(self.node, loc, key=key) if self.node is not None else (self.line, 1)

    def error(self, problem: str, *loc: str | int, key: bool = False) -> RuleError:
        """A `RuleError` at a key of this rule."""
        line, column = self.location(*loc, key=key)
        return RuleError(problem, file=self.file, line=line, column=column)


@dataclass(frozen=True)
class RuleBook:
    """Every rule in force, in load order, with where each came from."""

    rules: tuple[Rule, ...]
    sources: tuple[RuleSource, ...]

    @property
    def alert_rules(self) -> tuple[Rule, ...]:
        """The rules on alerts (the engine's); the others decide on events and schedules."""
        return tuple(r for r in self.rules if r.on_alerts)

    def by_name(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)


def rule_file_schema() -> dict[str, Any]:
    """The JSON Schema of a rule file, as editors use it (keys as written in YAML)."""
    schema = RuleFile.model_json_schema(by_alias=True)
    schema["$id"] = "https://responder.dev/schemas/rules.schema.json"
    schema["title"] = "Responder rule file"
    return schema


def read_rule_text(text: str, file: str) -> tuple[list[Rule], list[RuleSource], list[RuleError]]:
    """The valid rules of one file's text, where each is, and every problem of the others."""
    try:
        data, node = read_document(text, file, RuleError)
    except RuleError as exc:
        return [], [], [exc]
    if node is None:
        return [], [], []
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc, node, file, RuleFile, RuleError)
    else:
        return parsed.rules, [_source(file, node, i) for i in range(len(parsed.rules))], []
    # The rules without an error are loaded all the same, for `check` to look further.
    rules, sources = [], []
    items = data.get("rules") if isinstance(data, dict) else None
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError:
            continue
        sources.append(_source(file, node, i))
    return rules, sources, errors


def _source(file: str, node: yaml.Node, index: int) -> RuleSource:
    rule_node = node_at(node, ("rules", index))
    return RuleSource(file, int(rule_node.start_mark.line) + 1, rule_node)


def load_rule_text(text: str, file: str) -> tuple[list[Rule], list[RuleSource]]:
    """Load one rule file's text; raise the first `RuleError` (file, line and column)."""
    rules, sources, errors = read_rule_text(text, file)
    if errors:
        raise errors[0]
    return rules, sources


def read_rules(
    paths: Iterable[Path], known_flows: Collection[str] | None = None
) -> tuple[RuleBook, list[RuleError]]:
    """Every valid rule of the files (or directories of `*.yaml`/`*.yml`), and every problem
    of every file: `load_rules` raises the first, `responder check` reports them all."""
    rules: list[Rule] = []
    sources: list[RuleSource] = []
    seen: dict[str, RuleSource] = {}
    files, errors = _rule_files(paths)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(f"cannot read: {exc}", file=str(file)))
            continue
        file_rules, file_sources, file_errors = read_rule_text(text, str(file))
        errors.extend(file_errors)
        for rule, source in zip(file_rules, file_sources, strict=True):
            if rule.name in seen:
                first = seen[rule.name]
                problem = (
                    f"rule name {rule.name!r} is already used at {first.file}:{first.line}; "
                    "rule names must be unique"
                )
                errors.append(source.error(problem, "name"))
                continue
            if known_flows is not None and rule.run and rule.run.flow not in known_flows:
                problem = (
                    f"rule {rule.name!r}: unknown flow {rule.run.flow!r}; "
                    f"known flows: {', '.join(sorted(known_flows))}"
                )
                errors.append(source.error(problem, "run", "flow"))
            seen[rule.name] = source
            rules.append(rule)
            sources.append(source)
    return RuleBook(tuple(rules), tuple(sources)), errors


def load_rules(paths: Iterable[Path], known_flows: Collection[str] | None = None) -> RuleBook:
    """Load rule files (or directories of `*.yaml`/`*.yml`) into one `RuleBook`; raise the
    first problem as a `RuleError` naming file, line and column."""
    book, errors = read_rules(paths, known_flows)
    if errors:
        raise errors[0]
    # The YAML nodes (and through their marks, the files' text) are for `check`; a rule book
    # in force keeps only where each rule is.
    return RuleBook(book.rules, tuple(RuleSource(s.file, s.line) for s in book.sources))


def _rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[RuleError]]:
    files: list[Path] = []
    errors: list[RuleError] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        elif path.exists():
            files.append(path)
        else:
            errors.append(RuleError("no such file or directory", file=str(path)))
    return files, errors
