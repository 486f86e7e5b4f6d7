"""How operator commands reach a running Responder: its API, with the configured
credentials, and who is asking."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from responder import tls
from responder.cli.common import err_console, fail, settings_from
from responder.exceptions import ResponderError

if TYPE_CHECKING:
    import httpx


def call(
    config: Path | None, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any
) -> httpx.Response:
    """Call a running Responder's API with the configured credentials; exit on failure."""
    import httpx  # here, not for every command: `serve` does without it (and its CLI's imports)

    try:
        settings = settings_from(config)
    except ResponderError as exc:
        raise fail(exc) from None
    base = settings.base_url
    headers, auth = _credentials(settings)
    try:
        response = httpx.request(
            method,
            f"{base}{path}",
            headers=headers,
            auth=auth,
            timeout=10,
            verify=tls.client_context(settings.tls_certfile) if settings.tls_enabled else True,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        err_console.print(f"[red]error:[/red] cannot reach Responder at {base}: {exc}")
        raise typer.Exit(1) from None
    if response.status_code not in ok:
        err_console.print(f"[red]error:[/red] {response.status_code}: {response.text[:500]}")
        raise typer.Exit(1)
    return response


def _credentials(settings: Any) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The headers and basic auth to call the operator API with.

    What the operator API takes (responder.intake.auth): your own token ($RESPONDER_TOKEN,
    one of the named operators'), else operator_token, else the webhook's.
    """
    headers = {}
    auth = None
    own = os.environ.get("RESPONDER_TOKEN")
    token = (
        settings.operator_token if settings.operator_token is not None else settings.bearer_token
    )
    if own:
        headers["authorization"] = f"Bearer {own}"
    elif token is not None:
        headers["authorization"] = f"Bearer {token.get_secret_value()}"
    elif settings.basic_username is not None and settings.basic_password is not None:
        auth = (settings.basic_username, settings.basic_password.get_secret_value())
    return headers, auth


def login_name() -> str:
    """Who runs this command: the login name ($LOGNAME, $USER, or the password database)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no name, as in some containers
        return f"uid {os.getuid()}"
