"""YAML flows: remediations composed of atomic operations, without writing Python.

A file in `flows/` such as `clean-disk.yaml` declares one flow:

    flow: clean-disk
    description: Free space on a host, then verify that it came back.
    risk: medium
    parameters:
      host: {type: hostname}
      agent_url: {type: url}
    steps:
      - name: clean
        op: http.request
        with: {method: POST, url: "{{ params.agent_url }}/cleanup/{{ params.host | segment }}"}
        retries: 2
      - name: enough_space
        verify: {prometheus: "...", query: 'disk_free{instance="{{ params.host }}"} > 1e9'}

Step kinds (exactly one per step): `op` (with `with`), `parallel`, `approval`, `verify` and
`batch`. Every step may have a `when` condition, a jinja2 expression over `params` and the
results of earlier steps (`steps.<name>`). Strings are templates rendered in jinja2's sandbox
with StrictUndefined; a string that is one `{{ expression }}` keeps its type (a list stays a
list). The file is validated when it is loaded: unknown keys, unknown operations, duplicate
step names, bad templates and bad parameter types are refused with the file and line.

This module only reads and checks files; `flows.interpreter` turns them into Prefect flows.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import SchemaError

from flows.sources import PACKAGE_DIR
from flows.types import Host, Hostname, HttpUrl
from responder.decision.documents import Spec, line_of, load_document
from responder.decision.templates import compile_expression, valid_templates
from responder.durations import Duration
from responder.exceptions import FlowFileError, TemplateError

FLOWS_DIR = PACKAGE_DIR

FlowName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
StepName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
ParameterName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
BatchSize = Annotated[
    str, BeforeValidator(str), StringConstraints(pattern=r"^(100|[1-9][0-9]?)%$|^[1-9][0-9]{0,4}$")
]
# Names every YAML flow accepts besides its own parameters (set by the guard's decision).
RESERVED_PARAMETERS = ("approval_required", "approval_timeout_seconds")


def _expression(value: object) -> object:
    if not isinstance(value, str):
        return value  # runs before the str check, which refuses it
    try:
        compile_expression(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    return value


Templated = Annotated[Any, BeforeValidator(valid_templates)]
# Text that is a template; only text has a length to check.
TemplatedText = Annotated[str, BeforeValidator(valid_templates)]
# A value given as a template, rendered when the step runs.
Template = Annotated[str, StringConstraints(pattern=r"\{\{"), BeforeValidator(valid_templates)]
Expression = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_expression)]


_SCALARS: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "hostname": Hostname,
    "host": Host,
    "url": HttpUrl,
}
ParameterType = Literal["string", "integer", "number", "boolean", "hostname", "host", "url"]


class ParameterSpec(Spec):
    """One input of the flow; the run is refused before any step if it does not fit."""

    type: ParameterType | Literal["list"] = "string"
    items: ParameterType | None = Field(None, description="The element type of a list.")
    description: str = ""
    default: JsonValue = None
    required: bool | None = Field(None, description="Defaults to: no default given.")
    pattern: str | None = Field(None, description="A regex a string must match (anchored).")
    enum: list[str | int] | None = Field(None, min_length=1)
    minimum: float | None = None
    maximum: float | None = None
    min_items: int | None = Field(None, ge=0)
    max_items: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        if (self.type == "list") != (self.items is not None):
            raise ValueError("`items` is required for type list, and only for it")
        try:
            TypeAdapter(self.annotation())
        except SchemaError as exc:
            # pydantic's regex engine, not Python's: no look-around or backreferences.
            problem = str(exc).strip().splitlines()[-1]
            raise ValueError(f"pattern {self.pattern!r} cannot be used: {problem}") from None
        return self

    def annotation(self) -> Any:
        """The pydantic type this parameter validates with."""
        scalar = _SCALARS[self.items or self.type]
        constraints: dict[str, Any] = {}
        if self.pattern is not None:
            constraints["pattern"] = self.pattern
        if self.minimum is not None:
            constraints["ge"] = self.minimum
        if self.maximum is not None:
            constraints["le"] = self.maximum
        if self.enum is not None:
            scalar = Literal[tuple(self.enum)]
        elif constraints:
            scalar = Annotated[scalar, Field(**constraints)]
        if self.type != "list":
            return scalar
        elements = list.__class_getitem__(scalar)
        return Annotated[elements, Field(min_length=self.min_items, max_length=self.max_items)]

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class _Step(Spec):
    """What every step has: a name (its task run's, and its result's in `steps`) and an
    optional condition."""

    name: StepName
    when: Expression | None = Field(
        None, description="A jinja2 expression over params and steps; false skips the step."
    )


class OpStep(_Step):
    """Run one atomic operation, as a task run named after the step."""

    op: str = Field(description="An operation from the catalog, e.g. http.request.")
    with_: dict[str, Templated] = Field(default_factory=dict, alias="with")
    retries: int | None = Field(None, ge=0, le=10, description="Overrides the operation's.")
    retry_delay: Duration | None = None
    timeout: Duration | None = None


class ApprovalSpec(Spec):
    message: TemplatedText = Field(min_length=1, max_length=2000)
    timeout: Duration = 3600.0


class ApprovalStep(_Step):
    """Pause the run until a person approves it in the Prefect UI; a rejection cancels it."""

    approval: ApprovalSpec


class VerifySpec(Spec):
    """A PromQL condition that must hold before the deadline (see prometheus.wait_until)."""

    prometheus: Templated = Field(description="The Prometheus base URL.")
    query: TemplatedText = Field(min_length=1)
    condition: Literal["any", "none"] = Field(
        "any", description="any: the query returns a sample. none: it returns none."
    )
    within: Duration | Template = Field(
        300.0, description="The deadline; a template gives seconds."
    )
    every: Duration | Template = Field(10.0, description="Between two queries.")


class VerifyStep(_Step):
    verify: VerifySpec


class ParallelStep(_Step):
    """Operations run at the same time; the step fails if any of them fails."""

    parallel: list[OpStep] = Field(min_length=1)


class BatchLimits(Spec):
    """How a rollout proceeds; in a file each may be a template (`{{ params.batch_size }}`)."""

    size: BatchSize = Field("1", description="Elements per batch: a count or a percentage.")
    pause: Duration = Field(0.0, description="Wait between batches.")
    max_failures: int = Field(0, ge=0, description="Failed elements that stop the rollout.")


class BatchSpec(Spec):
    """Roll steps out over a list of hosts, a batch at a time."""

    over: Templated = Field(description="An expression giving the list, e.g. {{ params.hosts }}.")
    as_: StepName = Field("host", alias="as", description="The name each element is bound to.")
    size: BatchSize | Template = Field("1", description="Elements per batch: a count or a %.")
    pause: Duration | Template = Field(0.0, description="Wait between batches.")
    max_failures: Annotated[int, Field(ge=0)] | Template = Field(
        0, description="Failed elements that stop the rollout."
    )
    steps: list[OpStep] = Field(min_length=1, description="Run for each element, in order.")
    verify: VerifySpec | None = Field(None, description="Checked after each batch.")

    def limits(self, render: Callable[[Any], Any]) -> BatchLimits:
        """The limits, with templates rendered by `render`."""
        values = {"size": self.size, "pause": self.pause, "max_failures": self.max_failures}
        return BatchLimits.model_validate(render(values))


class BatchStep(_Step):
    batch: BatchSpec


STEP_KINDS = ("op", "approval", "verify", "parallel", "batch")


_STEP_MODELS: dict[str, type[Spec]] = {}


def _step(value: Any) -> Any:
    """Validate a step as the model of its one kind key, so errors talk about that kind only."""
    if not isinstance(value, dict):
        return value
    kinds = [key for key in STEP_KINDS if key in value]
    if len(kinds) != 1:
        raise ValueError(f"a step needs exactly one of: {', '.join(STEP_KINDS)}")
    model = _STEP_MODELS[kinds[0]]
    accepted = [info.alias or name for name, info in model.model_fields.items()]
    unknown = [key for key in value if key not in accepted]
    if unknown:
        raise ValueError(
            f"{kinds[0]} step: unknown key {unknown[0]!r}; accepted keys: {', '.join(accepted)}"
        )
    return model.model_validate(value)


Step = OpStep | ApprovalStep | VerifyStep | ParallelStep | BatchStep
_STEP_MODELS.update(op=OpStep, approval=ApprovalStep, verify=VerifyStep)
_STEP_MODELS.update(parallel=ParallelStep, batch=BatchStep)


class FlowFile(Spec):
    """One YAML flow file."""

    flow: FlowName
    description: str = Field(min_length=1, max_length=2000)
    risk: Literal["read", "low", "medium", "high"] = "medium"
    tags: list[str] = Field(default_factory=list)
    parameters: dict[ParameterName, ParameterSpec] = Field(default_factory=dict)
    steps: list[Annotated[Step, BeforeValidator(_step)]] = Field(min_length=1)

    @field_validator("parameters")
    @classmethod
    def _not_reserved(cls, value: dict[str, ParameterSpec]) -> dict[str, ParameterSpec]:
        for name in value:
            if name in RESERVED_PARAMETERS or keyword.iskeyword(name):
                raise ValueError(f"parameter name {name!r} is reserved")
        return value

    def all_steps(self) -> list[tuple[tuple[Any, ...], Step]]:
        """Every step, nested ones included, in order, with its path in the file."""
        found: list[tuple[tuple[Any, ...], Step]] = []
        for index, step in enumerate(self.steps):
            found.append((("steps", index), step))
            if isinstance(step, ParallelStep):
                found += [(("steps", index, "parallel", i), s) for i, s in enumerate(step.parallel)]
            elif isinstance(step, BatchStep):
                nested = enumerate(step.batch.steps)
                found += [(("steps", index, "batch", "steps", i), s) for i, s in nested]
        return found

    @property
    def has_approval_step(self) -> bool:
        return any(isinstance(step, ApprovalStep) for _, step in self.all_steps())

    def parameter_fields(self) -> dict[str, tuple[Any, Any]]:
        """Each parameter as (annotation, default), `...` when required; reserved ones last."""
        fields: dict[str, tuple[Any, Any]] = {}
        for name, spec in self.parameters.items():
            annotation: Any = Annotated[spec.annotation(), Field(description=spec.description)]
            fields[name] = (annotation, ... if spec.is_required else spec.default)
        fields["approval_required"] = (bool, False)
        fields["approval_timeout_seconds"] = (Annotated[int, Field(ge=10, le=86400)], 3600)
        return fields

    @cached_property
    def parameters_model(self) -> type[BaseModel]:
        """The flow's parameters as a pydantic model (its JSON schema is the catalog's)."""
        model: type[BaseModel] = create_model(
            f"{self.flow}-parameters",
            __config__=ConfigDict(extra="forbid"),
            **self.parameter_fields(),  # type: ignore[call-overload]
        )
        return model


@dataclass(frozen=True)
class FlowSource:
    """A loaded YAML flow and where it came from."""

    spec: FlowFile
    file: Path


def load_flow_file(path: Path, operations: set[str] | None = None) -> FlowSource:
    """Read and validate one YAML flow; `operations` are the names steps may use."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowFileError(f"cannot read: {exc.strerror}", file=file) from None
    except UnicodeDecodeError as exc:
        raise FlowFileError(f"cannot read: not UTF-8 (byte {exc.start})", file=file) from None
    spec, node = load_document(text, file, FlowFile, FlowFileError)
    if spec is None or node is None:
        raise FlowFileError(
            "the file is empty; a flow needs `flow`, `description`, `steps`", file=file
        )
    seen: set[str] = set()
    for where, step in spec.all_steps():
        problem = None
        if step.name in seen:
            problem = f"step name {step.name!r} is used twice"
        elif operations is not None and isinstance(step, OpStep) and step.op not in operations:
            problem = f"step {step.name!r}: unknown operation {step.op!r}; "
            problem += f"known: {', '.join(sorted(operations))}"
        if problem:
            raise FlowFileError(problem, file=file, line=line_of(node, (*where, "name")))
        seen.add(step.name)
    return FlowSource(spec, path)


def flow_files(directory: Path | None = None) -> list[Path]:
    """The YAML flow files of a directory in name order (None: every flow directory,
    `flows.sources`)."""
    if directory is None:
        from flows.sources import yaml_files

        return yaml_files()
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_flow_files(
    directory: Path | None = None, operations: set[str] | None = None
) -> dict[str, FlowSource]:
    """Every YAML flow in `directory` (None: in every flow directory) by flow name; a name
    declared twice is an error."""
    found: dict[str, FlowSource] = {}
    for path in flow_files(directory):
        source = load_flow_file(path, operations)
        if source.spec.flow in found:
            raise FlowFileError(
                f"flow {source.spec.flow!r} is also declared in {found[source.spec.flow].file}",
                file=str(path),
                line=1,
            )
        found[source.spec.flow] = source
    return found


def yaml_flow_names(directory: Path | None = None) -> list[str]:
    """The names of the YAML flows, read cheaply (for rule checking, without Prefect)."""
    names = []
    for path in flow_files(directory):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # `load_flow_files` says what is wrong with it, at its line
        if isinstance(data, dict) and isinstance(data.get("flow"), str):
            names.append(data["flow"])
    return names
