"""Every error Responder raises on purpose, its flows' included: one tree.

    ResponderError
    ├── ConfigError            settings that cannot work together
    │   └── SettingError       one setting and what it accepts (a ValueError too, for pydantic)
    ├── DocumentError          a YAML file that cannot be loaded (file, line, what is accepted)
    │   ├── RuleError          ...a rule file
    │   │   └── MatcherError   a label matcher that cannot be parsed
    │   ├── FlowFileError      ...a YAML flow file
    │   ├── CatalogError       ...the service catalog (config/services.yaml)
    │   ├── CheckFailed        `responder check` errors: a reload refuses them all
    │   └── MappingError       ...a JSON webhook's mapping (config/mappings/*.yaml)
    ├── TemplateError          a template that cannot render for this alert
    ├── PayloadError           what `simulate` or `replay` was given cannot be read
    ├── EngineRejected         durable_rules refused a message as already observed
    ├── StoreUnavailable       the store could not commit; callers answer 503
    │   └── StoreDamaged       the store's file is damaged (names the file)
    ├── DispatchError          Prefect refused or could not be reached
    ├── ApprovalError          an answer to a run that does not wait for one
    ├── Refused                an HTTP request answered with an error status and JSON body
    └── FlowError              a flow or an operation could not do its job (flows.errors)
        ├── Fenced             Responder says the run may not act now (flows.fencing asks)
        ├── FencingUnavailable Responder could not be asked: the step did not act
        ├── MissingSecret      a secret a step names is not set where it runs
        ├── StepFailed         a step of a YAML flow failed
        ├── RolloutStopped     a batch rollout stopped: too many failures, or a check
        ├── NotRecovered       the target did not come back healthy in time
        ├── CommandFailed      a program exited unexpectedly, or was killed at its timeout
        ├── ConditionNotMet    a PromQL condition did not hold before its deadline
        ├── KubernetesOperationError   the target's state forbids acting, or a step failed
        │   └── DrainIncomplete        a drain stopped at its deadline; the node stays cordoned
        └── OperationFailed    an operation failed; `transient` says whether a retry could help
            ├── HttpFailed             http.request could not send, or got a status not expected
            │   ├── UnexpectedStatus   ...the target answered with a status not expected
            │   └── OutcomeUnknown     ...a request that acts got no answer: it may have acted
            ├── QueryFailed            Prometheus refused the query or could not be reached
            ├── AlertmanagerFailed     Alertmanager refused or could not be reached
            └── NotificationFailed     a notification target was not notified

The classes outside this module live next to what raises them: `SettingError` in
`responder.settings`, `EngineRejected` in `responder.decision.engine`, `Refused` in
`responder.intake.errors`, and `FlowError` and
below in `flows` (`flows.errors` holds its bases). Which failures an operation retries is
decided in one place, `flows.errors.is_transient`. An exception private to one module (a
leading underscore) never leaves it, so it is not drawn. tests/test_exceptions.py checks that
this drawing is the real hierarchy.

A guard refusal is not an exception: it is a returned `Verdict`.
"""

from __future__ import annotations


class ResponderError(Exception):
    """Base of every error raised by Responder."""


class ConfigError(ResponderError):
    """Settings are invalid or contradict each other."""


class DocumentError(ResponderError):
    """A YAML file is invalid; the message names the file, the line and what is accepted."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        self.column = column
        where = file or "<input>"
        if line is not None:
            where = f"{where}:{line}" if column is None else f"{where}:{line}:{column}"
        super().__init__(f"{where}: {problem}")


class RuleError(DocumentError):
    """A rule file is invalid."""


class FlowFileError(DocumentError):
    """A YAML flow file is invalid."""


class CatalogError(DocumentError):
    """The service catalog is invalid."""


class CheckFailed(DocumentError):
    """`responder check` found errors in the rules, the catalog or the flows: a reload
    refuses them, and the rules and flows in force stay. `errors` lists every one
    (file, line, column, message); the exception's own place is the first's."""

    def __init__(self, errors: list[dict[str, str | int]]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        super().__init__(
            f"{first['message']}{more}",
            file=str(first["file"]),
            line=int(first["line"]),
            column=int(first["column"]),
        )


class MappingError(DocumentError):
    """A JSON webhook's mapping file (config/mappings/*.yaml) is invalid."""


class MatcherError(RuleError):
    """A label matcher is not of the form `name<op>"value"` with op one of = != =~ !~."""


class TemplateError(ResponderError):
    """A template failed to render (an undefined name, or a sandbox violation)."""


class StoreUnavailable(ResponderError):
    """The store did not commit; the caller must not acknowledge what it received."""


class StoreDamaged(StoreUnavailable):
    """The store's database file is damaged: nothing it holds can be trusted until repaired."""


class DispatchError(ResponderError):
    """Prefect refused what Responder asked, or could not be reached (to resume a run that
    waits for approval: the run still waits)."""


class ApprovalError(ResponderError):
    """A run was approved or rejected that does not wait for approval (or no longer)."""


class PayloadError(ResponderError):
    """The payload given to `responder simulate` is not an Alertmanager webhook."""
