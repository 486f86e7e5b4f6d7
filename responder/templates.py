"""Templates in rules, rendered in jinja2's sandbox with StrictUndefined.

Alert labels are hostile data: they are passed in as context values, never spliced into
template source, so a label holding `{{ ... }}` renders as that literal text.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from responder.exceptions import TemplateError

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


@lru_cache(maxsize=4096)
def compile_template(source: str) -> jinja2.Template:
    """Compile once; raise `TemplateError` naming the syntax problem."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template {source!r}: {exc.message} (template line {exc.lineno})"
        ) from None


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render one template string against `context`."""
    try:
        return compile_template(source).render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {source!r}: {exc.message}") from None
    except jinja2.TemplateError as exc:  # includes SecurityError from the sandbox
        raise TemplateError(f"template {source!r}: {exc}") from None


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like value; other scalars pass through unchanged."""
    if isinstance(value, str):
        return render(value, context) if ("{{" in value or "{%" in value) else value
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value
