"""Atomic operations: small, typed Prefect tasks that remediation flows are built from.

Every operation is a Prefect task that takes one pydantic model (its parameters) and returns
one pydantic model (what it observed). `@operation` registers it under its task name, with a
risk level and tags, so that the catalog lists it and YAML flows can call it by name:

    @operation(risk="high", tags=["host"])
    @task(name="command.run", retries=0)
    def command_run(params: CommandRun) -> CommandResult: ...

Operations never see secrets in their parameters: they take the *name* of a secret (see
`flows.secrets`) and read it when they run, so it never appears in the UI or in logs.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_type_hints

from prefect import Task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

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

T = TypeVar("T", bound=Task[Any, Any])


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


def operation(*, risk: Risk, tags: tuple[str, ...] | list[str] = ()) -> Callable[[T], T]:
    """Register a task as an atomic operation; its one parameter must be a pydantic model."""

    def register(task: T) -> T:
        # Operations act: a cached result would skip the action (or a verification poll)
        # whenever the same parameters come again within a run.
        task = cast(T, task.with_options(cache_policy=NO_CACHE))
        hints = get_type_hints(task.fn)
        returns = hints.pop("return", None)
        if len(hints) != 1:
            raise TypeError(f"operation {task.name} must take exactly one parameter model")
        (parameters,) = hints.values()
        if not (isinstance(parameters, type) and issubclass(parameters, BaseModel)):
            raise TypeError(f"operation {task.name}: its parameter must be a pydantic model")
        result = returns if isinstance(returns, type) and issubclass(returns, BaseModel) else None
        if task.name in OPERATIONS and OPERATIONS[task.name].task.fn is not task.fn:
            raise ValueError(f"operation {task.name} is registered twice")
        OPERATIONS[task.name] = Operation(task.name, task, parameters, result, risk, tuple(tags))
        return task

    return register


def all_operations() -> dict[str, Operation]:
    """Every atomic operation, by name (imports the modules that define them)."""
    for module in MODULES:
        importlib.import_module(module)
    return dict(sorted(OPERATIONS.items()))
