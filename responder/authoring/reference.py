"""Reference pages written from the code, so that they cannot drift from it.

`responder reference settings` prints docs/settings.md (every setting, its environment
variable, default and bounds); `responder reference operations` prints
docs/operations-reference.md (every operation and flow of the catalog, with its parameters).
`tests/authoring/test_reference.py` fails when a committed page differs from what the code says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

from responder.settings import Settings

PAGES = {
    "settings": Path("docs/settings.md"),
    "operations": Path("docs/operations-reference.md"),
}


def _cell(value: object) -> str:
    """A value as one markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    name = str(annotation)
    for module in ("typing.", "pathlib.", "pydantic.types."):
        name = name.replace(module, "")
    return name


_BOUNDS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length ≥"),
    (annotated_types.MaxLen, "max_length", "length ≤"),
)


def _bounds(field: FieldInfo) -> str:
    found = []
    for constraint in field.metadata:
        for kind, attribute, sign in _BOUNDS:
            if isinstance(constraint, kind):
                found.append(f"{sign} {getattr(constraint, attribute):g}")
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default" in extra:  # one that depends on the machine
        return str(extra["default"])
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, Path | str):
        return f"`{value}`" if str(value) else '`""`'
    return f"`{json.dumps(value)}`"


def settings_page() -> str:
    """docs/settings.md: every field of `Settings`."""
    prefix = Settings.model_config.get("env_prefix", "")
    lines = [
        "# Settings",
        "",
        "Generated from `responder/settings.py` by `responder reference settings`; "
        "`tests/authoring/test_reference.py` keeps it current.",
        "",
        "Each setting comes from, in order of precedence: the environment variable, the "
        "config file (`config/responder.yaml`, or `--config FILE`), the default. Lists and "
        "mappings in the environment are JSON. An invalid value stops start-up with one line "
        "naming the field, the value and what is accepted.",
        "",
        "| setting | environment variable | type | default | bounds | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        lines.append(
            f"| `{name}` | `{prefix}{name.upper()}` | {_cell(_type_name(field.annotation))} "
            f"| {_cell(_default(field))} | {_cell(_bounds(field))} "
            f"| {_cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def _schema_type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        if "enum" in target:
            return " \\| ".join(json.dumps(v) for v in target["enum"])
        return str(target.get("title", "object"))
    if "enum" in prop:
        return " or ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    for union in ("anyOf", "oneOf"):
        if union in prop:
            return " or ".join(_schema_type(p, defs) for p in prop[union])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_schema_type(prop.get('items', {}), defs)}"
    if kind == "object" and "additionalProperties" in prop:
        extra = prop["additionalProperties"]
        return f"map of {_schema_type(extra, defs) if isinstance(extra, dict) else 'any'}"
    if prop.get("format"):
        return f"{kind} ({prop['format']})"
    return str(kind)


_SCHEMA_BOUNDS = (
    ("minimum", "≥"),
    ("exclusiveMinimum", ">"),
    ("maximum", "≤"),
    ("exclusiveMaximum", "<"),
    ("minLength", "length ≥"),
    ("maxLength", "length ≤"),
    ("minItems", "items ≥"),
    ("maxItems", "items ≤"),
    ("pattern", "pattern"),
)


def _parameter_rows(schema: dict[str, Any]) -> Iterator[str]:
    defs = schema.get("$defs", schema.get("definitions", {}))
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        bounds = ", ".join(
            f"{sign} `{prop[key]}`" if key == "pattern" else f"{sign} {prop[key]}"
            for key, sign in _SCHEMA_BOUNDS
            if key in prop
        )
        default = "required" if name in required else f"`{json.dumps(prop.get('default'))}`"
        yield (
            f"| `{name}` | {_cell(_schema_type(prop, defs))} | {_cell(default)} "
            f"| {_cell(bounds)} | {_cell(prop.get('description', ''))} |"
        )


def operations_page() -> str:
    """docs/operations-reference.md: every operation and flow of the catalog."""
    from responder.orchestration.flow_catalog import catalog

    entries = catalog()
    lines = [
        "# Operations and flows",
        "",
        "Generated from the catalog (`flows/`) by `responder reference operations`; "
        "`tests/authoring/test_reference.py` keeps it current. The same is served by "
        "`GET /api/v1/catalog/{name}` and `responder catalog show NAME`.",
        "",
        "| name | kind | risk | what it does |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| [`{e.name}`](#{e.name.replace('.', '')}) | {e.kind} | {e.risk} "
        f"| {_cell(e.description)} |"
        for e in entries
    ]
    for entry in entries:
        lines += [
            "",
            f"## {entry.name}",
            "",
            f"{entry.kind}, risk **{entry.risk}**, tags: "
            f"{', '.join(entry.tags) or '-'}; defined in `{entry.source}`.",
            "",
            " ".join(entry.description.split()),
            "",
        ]
        rows = list(_parameter_rows(entry.parameters))
        if rows:
            lines += [
                "| parameter | type | default | bounds | description |",
                "|---|---|---|---|---|",
                *rows,
            ]
        else:
            lines.append("No parameters.")
    return "\n".join(lines) + "\n"


def page(name: str) -> str:
    """The reference page `name` ("settings" or "operations")."""
    return settings_page() if name == "settings" else operations_page()
