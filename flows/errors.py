"""How flows and their operations fail, and the one rule for which failures are worth a retry.

Every exception that `flows` raises on purpose is a `FlowError`, so a `ResponderError`: the
whole tree, flows included, is drawn in `responder.exceptions`.

An operation that retries on its own (`@operation(retries=...)`) retries only what
`is_transient` calls transient: the target was unreachable or overloaded, so trying again
could help. A target that refused the request (a malformed query, a bad matcher, a paused
Deployment) fails at once instead of after every retry delay. Our own failures say so
themselves (`OperationFailed.transient`); the errors a client library raises, which an
operation lets through as they are (the Kubernetes client's `ApiError`), are judged by a rule
the module using that library declares with `transient_when`, so this module imports none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from responder.exceptions import ResponderError

if TYPE_CHECKING:  # flows.secrets imports this module, and needs no Prefect
    from prefect import State, Task
    from prefect.client.schemas.objects import TaskRun

E = TypeVar("E", bound=BaseException)


class FlowError(ResponderError):
    """A remediation flow, or one of its operations, could not do its job."""


class Fenced(FlowError):
    """Responder says this run may not act (the message says why): the run is cancelled."""


class FencingUnavailable(FlowError):
    """Responder could not be asked whether this run may act: the step did not act."""


class OperationFailed(FlowError):
    """An operation could not do its job; `transient` says whether a retry could help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# A client library's error class → the rule saying whether one of its errors is transient.
_CLIENT_ERRORS: list[tuple[type[BaseException], Callable[[Any], bool]]] = []


def transient_when(kind: type[E], rule: Callable[[E], bool]) -> None:
    """Declare which errors of a client library (subclasses of `kind`) are transient."""
    _CLIENT_ERRORS.append((kind, rule))


def is_transient(error: BaseException | None) -> bool:
    """Whether trying again could help: the target was unreachable, overloaded or down."""
    if isinstance(error, OperationFailed):
        return error.transient
    return any(isinstance(error, kind) and rule(error) for kind, rule in _CLIENT_ERRORS)


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition of every operation that retries: `is_transient`."""
    error = state.data if isinstance(state.data, BaseException) else None
    return is_transient(error)


def step_retries(task: Task[..., Any], retries: int) -> dict[str, Any]:
    """The task options of a YAML step's `retries`: the operation's own retry condition if
    it declares one, else any failure but a fencing refusal (asking again would not help)."""
    options: dict[str, Any] = {"retries": retries}
    if task.retry_condition_fn is None:
        options["retry_condition_fn"] = _not_fenced
    return options


def _not_fenced(_task: Task[..., Any], _task_run: TaskRun, state: State[Any]) -> bool:
    return not isinstance(state.data, Fenced | FencingUnavailable)
