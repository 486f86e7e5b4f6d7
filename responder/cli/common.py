"""What every command shares: the consoles, the `--config` option, settings, and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from responder.exceptions import ResponderError

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (default: config/responder.yaml)."),
]


def settings_from(config: Path | None, **overrides: Any) -> Any:
    """The settings of `config`, with the flags that were given (not None) on top."""
    from responder.settings import load_settings

    clean = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(config, **clean)


def fail(exc: ResponderError) -> typer.Exit:
    """Print an error the user can act on; the exit to raise."""
    # Escaped: the message quotes what the user wrote, which may look like markup.
    err_console.print(
        f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(1)
