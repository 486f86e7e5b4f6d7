"""Every error Responder raises on purpose.

    ResponderError
    ├── ConfigError            settings that cannot work together
    ├── DocumentError          a YAML file that cannot be loaded (file, line, what is accepted)
    │   ├── RuleError          ...a rule file
    │   │   └── MatcherError   a label matcher that cannot be parsed
    │   └── CatalogError       ...the service catalog (config/services.yaml)
    ├── TemplateError          a template that cannot render for this alert
    ├── StoreUnavailable       the store could not commit; callers answer 503
    │   └── StoreDamaged       the store's file is damaged (names the file)
    ├── DispatchError          Prefect refused or could not be reached
    └── ApprovalError          an answer to a run that does not wait for one

A guard refusal is not an exception: it is a returned `Verdict`.
"""

from __future__ import annotations


class ResponderError(Exception):
    """Base of every error raised by Responder."""


class ConfigError(ResponderError):
    """Settings are invalid or contradict each other."""


class DocumentError(ResponderError):
    """A YAML file is invalid; the message names the file, the line and what is accepted."""

    def __init__(self, problem: str, *, file: str | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        where = file or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")


class RuleError(DocumentError):
    """A rule file is invalid."""


class FlowFileError(DocumentError):
    """A YAML flow file is invalid."""


class CatalogError(DocumentError):
    """The service catalog is invalid."""


class MatcherError(RuleError):
    """A label matcher is not of the form `name<op>"value"` with op one of = != =~ !~."""


class TemplateError(ResponderError):
    """A template failed to render (an undefined name, or a sandbox violation)."""


class StoreUnavailable(ResponderError):
    """The store did not commit; the caller must not acknowledge what it received."""


class StoreDamaged(StoreUnavailable):
    """The store's database file is damaged: nothing it holds can be trusted until repaired."""


class DispatchError(ResponderError):
    """A flow run could not be created in Prefect."""


class ApprovalError(ResponderError):
    """A run was approved or rejected that does not wait for approval (or no longer)."""
