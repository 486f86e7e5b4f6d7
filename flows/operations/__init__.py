"""Atomic operations: small, typed Prefect tasks that remediation flows are built from.

Every operation is a Prefect task that takes one pydantic model (its parameters) and returns
one pydantic model (what it observed). `@operation` makes a function one: it builds the task,
with its name, risk level, tags and retry policy, and registers it so that the catalog lists
it and YAML flows can call it by name:

    @operation("command.run", risk="high", tags=["host"], run_name="{params.program}")
    def command_run(params: CommandRun) -> CommandResult: ...

Every operation whose risk is not `read` asks Responder before it acts (`flows.fencing`):
a run that lost its key, whose alert resolved, or that Responder did not start, does not
act. `reads` names the calls of such an operation that only read (an HTTP GET).

Operations never see secrets in their parameters: they take the *name* of a secret (see
`flows.secrets`) and read it when they run, so it never appears in the UI or in logs.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar, get_type_hints

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from flows.errors import retry_if_transient
from flows.fencing import check_before_acting

# read: observes only. low: reversible, one target. medium: changes one target's state.
# high: can take capacity away or touch many targets.
Risk = Literal["read", "low", "medium", "high"]

# The modules that define operations, imported by `all_operations()`.
MODULES = (
    "flows.operations.http",
    "flows.operations.command",
    "flows.operations.ssh",
    "flows.operations.prometheus",
    "flows.operations.alertmanager",
    "flows.operations.notify",
    "flows.operations.kubernetes",
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Operation:
    """One registered atomic operation."""

    name: str
    task: Task[Any, Any]
    parameters: type[BaseModel]
    result: type[BaseModel] | None
    risk: Risk
    tags: tuple[str, ...]

    @property
    def description(self) -> str:
        """The first paragraph of the task's docstring."""
        doc = inspect.getdoc(self.task.fn) or ""
        return doc.split("\n\n", 1)[0].replace("\n", " ").strip()

    def __call__(self, parameters: BaseModel | dict[str, Any]) -> Any:
        """Run the operation as a task of the current flow, after validating its parameters."""
        return self.task(self.parameters.model_validate(parameters))


OPERATIONS: dict[str, Operation] = {}


def operation(
    name: str,
    *,
    risk: Risk,
    tags: Sequence[str] = (),
    retries: int = 0,
    retry_delays: Sequence[float] = (),
    run_name: str | None = None,
    reads: Callable[[Any], bool] | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Make a function an atomic operation: a Prefect task named `name`, registered.

    Its one parameter must be a pydantic model. The retry policy is declared here, once: up
    to `retries` more attempts, `retry_delays` seconds apart, each only after a transient
    failure (`flows.errors.is_transient`). An operation declaring none is not retried on its
    own (an action that must not repeat); a YAML step's `retries` then retries any failure,
    as the flow's author asked. `run_name` names each task run (a Prefect template).
    Unless `risk` is `read`, each call is fenced first, except those `reads(parameters)`
    calls read-only.
    """
    if retries < 0 or (retry_delays and not retries):
        raise ValueError(f"operation {name}: retry delays need retries >= 1")
    options: dict[str, Any] = {"retries": retries}
    if retries:
        options |= {
            "retry_delay_seconds": list(retry_delays),
            "retry_condition_fn": retry_if_transient,
        }
    if run_name is not None:
        options["task_run_name"] = run_name

    def register(fn: Callable[P, R]) -> Task[P, R]:
        parameters, result = _models(name, fn)
        known = OPERATIONS.get(name)
        if known is not None and getattr(known.task.fn, "__wrapped__", known.task.fn) is not fn:
            raise ValueError(f"operation {name} is registered twice")
        # Operations act: a cached result would skip the action (or a verification poll)
        # whenever the same parameters come again within a run.
        body = fn if risk == "read" else _fenced(name, fn, reads)
        made: Task[P, R] = task(name=name, cache_policy=NO_CACHE, **options)(body)
        OPERATIONS[name] = Operation(name, made, parameters, result, risk, tuple(tags))
        return made

    return register


def _fenced(name: str, fn: Callable[P, R], reads: Callable[[Any], bool] | None) -> Callable[P, R]:
    """`fn`, asking Responder first whether the run may act (`flows.fencing`)."""

    @functools.wraps(fn)
    def fenced(*args: P.args, **kwargs: P.kwargs) -> R:
        (parameters,) = [*args, *kwargs.values()]  # type: ignore[misc]
        if reads is None or not reads(parameters):
            check_before_acting(name)
        return fn(*args, **kwargs)

    return fenced


def _models(name: str, fn: Callable[..., Any]) -> tuple[type[BaseModel], type[BaseModel] | None]:
    """The parameter model an operation takes, and the result model it returns if any."""
    hints = get_type_hints(fn)
    returns = hints.pop("return", None)
    if len(hints) != 1:
        raise TypeError(f"operation {name} must take exactly one parameter model")
    (parameters,) = hints.values()
    if not (isinstance(parameters, type) and issubclass(parameters, BaseModel)):
        raise TypeError(f"operation {name}: its parameter must be a pydantic model")
    result = returns if isinstance(returns, type) and issubclass(returns, BaseModel) else None
    return parameters, result


def all_operations() -> dict[str, Operation]:
    """Every atomic operation, by name (imports the modules that define them)."""
    for module in MODULES:
        importlib.import_module(module)
    return dict(sorted(OPERATIONS.items()))
