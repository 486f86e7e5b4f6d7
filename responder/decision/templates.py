"""Templates in rules, rendered in jinja2's sandbox with StrictUndefined.

Alert labels are hostile data: they are passed in as context values, never spliced into
template source, so a label holding `{{ ... }}` renders as that literal text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from responder.decision.hosts import canonical_host
from responder.exceptions import TemplateError


def path_segment(value: object) -> str:
    """Quote a value as one URL path segment: `/` included, and never `.` or `..`.

    jinja2's `urlencode` keeps `/`, and URL parsers resolve `..`, so a label such as
    `../admin` would otherwise walk to another path of the API it is sent to.
    """
    text = str(value)
    if text.strip(".") == "" or text.lower().replace("%2e", ".").strip(".") == "":
        raise ValueError(f"{text!r} cannot be a URL path segment")
    return quote(text, safe="")


# jinja2 leaves these to Python: a 5000-digit number, nesting deeper than the parser's stack
# or than 20 blocks (the compiled code's limit).
_PAST_PYTHONS_LIMITS = (ValueError, RecursionError, SyntaxError)


def name_value(value: object) -> str:
    """A value as it goes into a guard key or mutex name: `%`, `/` and `:` percent-encoded.

    The template's own text separates the parts of a name (`page/{{ a }}/{{ b }}`); a value
    must not, or `a=x/y, b=z` and `a=x, b=y/z` would be one key.
    """
    return str(value).replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_ENV.filters["segment"] = path_segment
_ENV.filters["host"] = canonical_host
# Guard keys and mutex names: every `{{ ... }}` output goes through `name_value`.
_NAME_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, finalize=name_value
)
_NAME_ENV.filters.update(_ENV.filters)


@lru_cache(maxsize=4096)
def compile_template(source: str, *, name: bool = False) -> jinja2.Template:
    """Compile once (for a guard name with `name`); raise `TemplateError` naming the problem."""
    try:
        return (_NAME_ENV if name else _ENV).from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template {source!r}: {exc.message} (template line {exc.lineno})"
        ) from None
    except _PAST_PYTHONS_LIMITS as exc:
        raise TemplateError(f"template {source!r}: {exc.__class__.__name__}: {exc}") from None


def render(source: str, context: Mapping[str, Any], *, name: bool = False) -> str:
    """Render one template string against `context`; with `name`, values are escaped as in
    a guard key or mutex name (see `name_value`)."""
    try:
        return compile_template(source, name=name).render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {source!r}: {exc.message}") from None
    except jinja2.TemplateError as exc:  # includes SecurityError from the sandbox
        raise TemplateError(f"template {source!r}: {exc}") from None
    except Exception as exc:
        # A label can make a filter fail (1/(x|int) with x="0", '%d'|format("a")): that is
        # this alert's problem, not the engine's.
        raise TemplateError(f"template {source!r}: {exc.__class__.__name__}: {exc}") from None


def render_value(value: Any, context: Mapping[str, Any], *, native: bool = False) -> Any:
    """Render every string inside a JSON-like value; other scalars pass through unchanged.

    With `native`, a string that is one `{{ expression }}` keeps its type:
    `"{{ params.hosts }}"` gives the list itself, not its text.
    """
    if isinstance(value, str):
        whole = _WHOLE_EXPRESSION.match(value) if native else None
        if whole:
            return evaluate(whole["expression"].strip(), context)
        return render(value, context) if ("{{" in value or "{%" in value) else value
    if isinstance(value, Mapping):
        return {k: render_value(v, context, native=native) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, native=native) for v in value]
    return value


def valid_templates(value: Any) -> Any:
    """A pydantic validator: every string in a JSON-like value compiles as a template."""
    if isinstance(value, str):
        try:
            compile_template(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
    elif isinstance(value, Mapping):
        for item in value.values():
            valid_templates(item)
    elif isinstance(value, list):
        for item in value:
            valid_templates(item)
    return value


@lru_cache(maxsize=1024)
def compile_expression(source: str) -> Any:
    """Compile a bare jinja2 expression (`steps.check.samples | length > 0`) once."""
    try:
        return _ENV.compile_expression(source, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"expression {source!r}: {exc.message}") from None
    except _PAST_PYTHONS_LIMITS as exc:
        raise TemplateError(f"expression {source!r}: {exc.__class__.__name__}: {exc}") from None


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare expression to its native value (a list, a number, a bool)."""
    try:
        return compile_expression(source)(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"expression {source!r}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"expression {source!r}: {exc}") from None
    except Exception as exc:
        raise TemplateError(f"expression {source!r}: {exc.__class__.__name__}: {exc}") from None


_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expression>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)
