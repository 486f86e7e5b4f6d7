"""Secrets for operations, named in parameters and read only when a step runs.

A parameter never holds a secret, only its name, so secrets never appear in the Prefect UI,
in run parameters or in logs. A name is either

- `FLOW_SECRET_<NAME>`: an environment variable on the worker. Only variables with this
  prefix may be read, because the worker also inherits Responder's own credentials; or
- `prefect:<block-name>`: a Prefect Secret block (`prefect block create secret`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import StringConstraints

from flows.errors import FlowError

SecretName = Annotated[
    str,
    StringConstraints(pattern=r"^(FLOW_SECRET_[A-Z0-9_]{1,100}|prefect:[a-z0-9][a-z0-9-]{0,99})$"),
]


class MissingSecret(FlowError):
    """A secret named in a parameter is not set where the step runs."""


def read_secret(name: str) -> str:
    """The value of one secret; fails before anything is sent when it is missing."""
    if name.startswith("prefect:"):
        from prefect.blocks.system import Secret

        try:
            block: Any = Secret.load(name.removeprefix("prefect:"))
            value = block.get()
        except ValueError as exc:
            raise MissingSecret(f"Prefect Secret block {name} does not exist") from exc
        return str(value)
    value = os.environ.get(name)
    if value is None:
        raise MissingSecret(f"environment variable {name} is not set")
    return value


def secret_headers(names: dict[str, str] | None) -> dict[str, str]:
    """Header name → secret name, resolved to header values."""
    headers = {}
    for header, name in (names or {}).items():
        try:
            headers[header] = read_secret(name)
        except MissingSecret as exc:
            raise MissingSecret(f"header {header}: {exc}") from exc
    return headers


def check_secrets(names: Iterable[str]) -> None:
    """Fail now, before a flow acts or waits for a person, if any secret is missing."""
    for name in names:
        read_secret(name)
