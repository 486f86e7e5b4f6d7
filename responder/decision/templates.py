"""Templates in rules, rendered in jinja2's sandbox with StrictUndefined.

Alert labels are hostile data: they are passed in as context values, never spliced into
template source, so a label holding `{{ ... }}` renders as that literal text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

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


_NOTED: ContextVar[list[tuple[object, str | None, str]]] = ContextVar("noted_undefined")


class _Unvouched(jinja2.ChainableUndefined):
    """For `probe`: a name no value stands behind, noted where a template uses it (where
    `StrictUndefined` would fail), then rendered as its own name so that rendering goes on."""

    __slots__ = ()

    def _note(self) -> None:
        _NOTED.get().append((self._undefined_obj, self._undefined_name, self._undefined_message))

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return super()._fail_with_undefined_error(*args, **kwargs)

    def __str__(self) -> str:
        self._note()
        return str(self._undefined_name or "undefined")

    def __iter__(self) -> Any:
        self._note()
        return iter(())

    def __bool__(self) -> bool:
        self._note()
        return True

    def __len__(self) -> int:
        self._note()
        return 0

    def __eq__(self, other: object) -> bool:
        self._note()
        return False

    def __ne__(self, other: object) -> bool:
        self._note()
        return True

    def __hash__(self) -> int:
        return id(self)


# `Undefined` binds its operators to its own failure; the probe's must note first.
for _operator in (
    "add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv mod rmod "
    "pos neg call lt le gt ge int float complex pow rpow"
).split():
    setattr(_Unvouched, f"__{_operator}__", _Unvouched._fail_with_undefined_error)


def _environment(undefined: type[jinja2.Undefined], *, name: bool) -> ImmutableSandboxedEnvironment:
    """The sandbox templates render in; for a guard key or mutex name (`name`), every
    `{{ ... }}` output goes through `name_value`."""
    env = ImmutableSandboxedEnvironment(
        undefined=undefined, autoescape=False, finalize=name_value if name else None
    )
    env.filters["segment"] = path_segment
    env.filters["host"] = canonical_host
    return env


_ENV = _environment(jinja2.StrictUndefined, name=False)
# By (name, probe): guard names' and `probe`'s environments.
_ENVIRONMENTS = {
    (False, False): _ENV,
    (True, False): _environment(jinja2.StrictUndefined, name=True),
    (False, True): _environment(_Unvouched, name=False),
    (True, True): _environment(_Unvouched, name=True),
}


@lru_cache(maxsize=4096)
def compile_template(source: str, *, name: bool = False, probe: bool = False) -> jinja2.Template:
    """Compile once (for a guard name with `name`; for `probe` with `probe`); raise
    `TemplateError` naming the problem."""
    try:
        return _ENVIRONMENTS[name, probe].from_string(source)
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


@dataclass(frozen=True)
class Probe:
    """What rendering a template against a probing context showed: each name it used that no
    value stands behind (the object it was looked up on, or `jinja2`'s `missing` for a
    top-level name; the name; jinja2's message), the error that stopped it, if one did, and
    what it rendered otherwise."""

    unvouched: tuple[tuple[object, str | None, str], ...]
    failure: str | None
    output: str | None


def probe(source: str, context: Mapping[str, Any], *, name: bool = False) -> Probe:
    """Render `source` in the sandbox as `render` does, except that a name no value stands
    behind is noted and rendering goes on, so that one pass finds every such name.

    A name tested (`is defined`) or given a `default` is not noted: it cannot fail."""
    noted: list[tuple[object, str | None, str]] = []
    token = _NOTED.set(noted)
    failure = output = None
    try:
        output = compile_template(source, name=name, probe=True).render(context)
    except TemplateError as exc:
        failure = str(exc)
    except jinja2.UndefinedError:
        pass  # noted already
    except jinja2.TemplateError as exc:  # includes SecurityError from the sandbox
        failure = f"template {source!r}: {exc}"
    except Exception as exc:
        failure = f"template {source!r}: {exc.__class__.__name__}: {exc}"
    finally:
        _NOTED.reset(token)
    once = {(id(owner), used): (owner, used, why) for owner, used, why in noted}
    return Probe(tuple(once.values()), failure, output)


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
    """A pydantic validator: every string in a JSON-like value compiles as a template. Each
    one that does not is an error at its own place (`json_body.summary`), not the value's."""
    problems: list[InitErrorDetails] = []
    _template_problems(value, (), problems)
    if problems:
        raise ValidationError.from_exception_data("templates", problems)
    return value


def _template_problems(
    value: Any, loc: tuple[str | int, ...], problems: list[InitErrorDetails]
) -> None:
    if isinstance(value, str):
        try:
            compile_template(value)
        except TemplateError as exc:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError("template", "{error}", {"error": str(exc)}),
                    loc=loc,
                    input=value,
                )
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _template_problems(item, (*loc, str(key)), problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _template_problems(item, (*loc, i), problems)


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
