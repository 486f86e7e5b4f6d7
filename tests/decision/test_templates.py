from __future__ import annotations

import pytest

from responder.decision.templates import compile_template, render, render_value
from responder.exceptions import TemplateError

HOSTILE = "{{ 7*7 }}$(reboot);`id`|../../admin"


def context(value: str) -> dict[str, object]:
    return {"alert": {"labels": {"x": value}}, "vars": {}}


def test_label_values_are_data_not_templates() -> None:
    assert render("{{ alert.labels.x }}", context(HOSTILE)) == HOSTILE


def test_strict_undefined_names_the_missing_name() -> None:
    with pytest.raises(TemplateError, match="has no attribute 'y'"):
        render("{{ alert.labels.y }}", context("v"))


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(TemplateError, match=r"unsafe|not safely callable|access"):
        render("{{ alert.__class__.__mro__[1].__subclasses__() }}", context("v"))


@pytest.mark.parametrize(
    "template", ["{{ 1 / (alert.labels.x | int) }}", "{{ '%d' | format(alert.labels.x) }}"]
)
def test_a_label_that_breaks_a_filter_is_a_template_error(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, context("0" if "int" in template else "a"))


def test_segment_quotes_a_label_into_one_path_segment() -> None:
    url = render("http://svc/cleanup/{{ alert.labels.x | segment }}", context("../../admin"))
    assert url == "http://svc/cleanup/..%2F..%2Fadmin"
    for value in ("..", ".", "%2e%2E", "..."):
        with pytest.raises(TemplateError, match="path segment"):
            render("{{ alert.labels.x | segment }}", context(value))


def test_render_value_walks_structures() -> None:
    value = {"a": ["{{ alert.labels.x }}", 3], "b": "plain"}
    assert render_value(value, context("v")) == {"a": ["v", 3], "b": "plain"}


@pytest.mark.parametrize(
    "template",
    [
        "{{ " + "9" * 5000 + " }}",
        "{{ " + "(" * 400 + "1" + ")" * 400 + " }}",
        "{% for x in y %}" * 25 + "{% endfor %}" * 25,
    ],
)
def test_a_template_past_pythons_limits_is_a_template_error(template: str) -> None:
    # Found by tests/test_fuzz.py: ValueError, RecursionError and SyntaxError escaped.
    with pytest.raises(TemplateError):
        compile_template(template)


def test_probe_notes_every_name_that_would_fail_and_renders_on() -> None:
    from jinja2.utils import missing

    from responder.decision.templates import probe

    labels: dict[str, str] = {"a": "1"}
    variables = {"x": "y"}
    context = {"alert": {"labels": labels}, "vars": variables}
    found = probe("{{ vars.nope }}/{{ alert.labels.b }}/{{ alert.labels.a }}/{{ z }}", context)
    assert [(owner, name) for owner, name, _ in found.unvouched] == [
        (variables, "nope"),
        (labels, "b"),
        (missing, "z"),
    ]
    assert found.output == "nope/b/1/z" and found.failure is None
    # What cannot fail is not noted: a default, a test; a sandbox escape is.
    safe = probe(
        "{{ alert.labels.b | default('-') }}{% if z is defined %}{{ z }}{% endif %}", context
    )
    assert (safe.unvouched, safe.output) == ((), "-")
    unsafe = probe("{{ alert.labels.a.__class__ }}", context)
    assert [why for _, _, why in unsafe.unvouched] == [
        "access to attribute '__class__' of 'str' object is unsafe."
    ]
    # The runtime renderer is unchanged: StrictUndefined still fails.
    with pytest.raises(TemplateError):
        render("{{ alert.labels.b }}", context)
